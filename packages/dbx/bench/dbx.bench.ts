// @x/dbx benchmarks on an embedded primary and two streaming replicas (all on this machine):
//  - point-select-vs-raw-pool: a point SELECT through cluster.readQuery({ node: 'primary' }) vs a raw
//    pg.Pool on the same node, in alternating short rounds.
//  - read-throughput-2-replicas-vs-primary-only: readQuery spread over two replicas vs a primary-only cluster.
//  - failed-reads-while-replica-killed: reads that fail for callers when a replica is SIGKILLed under
//    load, vs the same cluster with retries off; plus the time until the dead replica was excluded,
//    vs the time it takes with no traffic (periodic health checks alone).
// Run: npx turbo run build --filter=@x/testkit && node scripts/bench.mjs dbx

import { type PgNode, startPostgres } from '@x/testkit';
import { measureThroughput, reportBench } from '@x/testkit/bench';
import pg from 'pg';
import { type Cluster, type ClusterOptions, createCluster } from '../src/index.js';

// Per comparison, split into 16 alternating rounds; 3 s let a single noisy round swing the ratio by ±0.1.
const DURATION_MS = Number(process.env.DBX_BENCH_DURATION_MS ?? 8_000);
const CONCURRENCY = 8;
const ROWS = 1_000;
const SQL = 'select v from kv where id = $1';
const HEALTH = { intervalMs: 250, timeoutMs: 500, failuresBeforeDown: 2, fastRecheckMs: 30 };

const pgc = await startPostgres({ replicas: 2, embedded: true });
const r1 = pgc.replicas[0] as PgNode;
const r2 = pgc.replicas[1] as PgNode;
if (!r1 || !r2) throw new Error('two replicas expected');
const key = () => 1 + Math.floor(Math.random() * ROWS);

function cluster(extra: Partial<ClusterOptions> = {}): Cluster {
  return createCluster({
    primary: pgc.primary.url,
    replicas: [r1.url, r2.url],
    pool: { max: CONCURRENCY },
    healthCheck: HEALTH,
    slowQueryThresholdMs: null,
    ...extra,
  } as ClusterOptions);
}

/**
 * Throughput of `a` and `b` measured in alternating short rounds (order swapped each round), so load
 * from other processes on a shared machine hits both alike. Returns ops/s over all rounds.
 */
async function interleaved(
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
  concurrency: number,
): Promise<[number, number]> {
  const rounds = 16;
  const per = Math.max(100, DURATION_MS / rounds);
  const total = [
    { ops: 0, ms: 0 },
    { ops: 0, ms: 0 },
  ];
  const run = async (f: () => Promise<unknown>, slot: { ops: number; ms: number }) => {
    const r = await measureThroughput(
      async () => {
        await f();
      },
      { durationMs: per, concurrency },
    );
    slot.ops += r.ops;
    slot.ms += (r.ops * 1000) / r.perSecond;
  };
  const [ta, tb] = total as [{ ops: number; ms: number }, { ops: number; ms: number }];
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      await run(a, ta);
      await run(b, tb);
    } else {
      await run(b, tb);
      await run(a, ta);
    }
  }
  return [(ta.ops * 1000) / ta.ms, (tb.ops * 1000) / tb.ms];
}

async function until(cond: () => boolean, timeoutMs = 20_000): Promise<number> {
  const started = performance.now();
  while (!cond()) {
    if (performance.now() - started > timeoutMs) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - started;
}

try {
  const setup = new pg.Client({ connectionString: pgc.primary.url });
  await setup.connect();
  await setup.query('create table kv (id int primary key, v text not null)');
  await setup.query(`insert into kv select g, md5(g::text) from generate_series(1, ${ROWS}) g`);
  await setup.end();
  await pgc.waitForReplicas();

  // ---- point-select-vs-raw-pool (same node: the primary), interleaved rounds to spread noise
  const raw = new pg.Pool({ connectionString: pgc.primary.url, max: CONCURRENCY });
  const primaryOnly = createCluster({
    primary: pgc.primary.url,
    pool: { max: CONCURRENCY },
    healthCheck: HEALTH,
    slowQueryThresholdMs: null,
  });
  await primaryOnly.checkHealth();
  const [pointDbx, pointRaw] = await interleaved(
    () => primaryOnly.readQuery(SQL, [key()], { node: 'primary' }),
    () => raw.query(SQL, [key()]),
    CONCURRENCY,
  );
  await raw.end();

  // ---- read-throughput-2-replicas-vs-primary-only
  const spread = cluster();
  await spread.checkHealth();
  const [readReplicas, readPrimary] = await interleaved(
    () => spread.readQuery(SQL, [key()]),
    () => primaryOnly.readQuery(SQL, [key()]),
    CONCURRENCY * 2,
  );
  await primaryOnly.close();
  await spread.close();

  // ---- failed-reads-while-replica-killed
  async function killUnderLoad(
    maxAttempts: number,
  ): Promise<{ errors: number; reads: number; excludedMs: number }> {
    const c = cluster({ retry: { maxAttempts, baseDelayMs: 10, maxDelayMs: 100 } });
    await c.checkHealth();
    let errors = 0;
    let reads = 0;
    let stop = false;
    const loops = Array.from({ length: CONCURRENCY }, async () => {
      while (!stop) {
        try {
          await c.readQuery(SQL, [key()]);
          reads++;
        } catch {
          errors++;
        }
      }
    });
    await new Promise((r) => setTimeout(r, 500));
    const killedAt = performance.now();
    await r1.kill();
    await until(() => c.stats().nodes.find((n) => n.name === 'replica1')?.healthy === false);
    const excludedMs = performance.now() - killedAt;
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await Promise.all(loops);
    await c.close();
    await r1.start();
    await pgc.waitForReplicas();
    return { errors, reads, excludedMs };
  }
  const withRetry = await killUnderLoad(3);
  const withoutRetry = await killUnderLoad(1);

  // Idle: only the periodic health checks notice the death.
  const idle = cluster();
  await idle.checkHealth();
  const idleKilledAt = performance.now();
  await r1.kill();
  await until(() => idle.stats().nodes.find((n) => n.name === 'replica1')?.healthy === false);
  const idleExcludedMs = performance.now() - idleKilledAt;
  await idle.close();

  await reportBench('dbx', [
    {
      name: 'point-select-vs-raw-pool',
      value: pointDbx,
      unit: 'ops/s',
      baseline: { name: 'raw-pg-pool-same-node', value: pointRaw },
    },
    {
      name: 'read-throughput-2-replicas-vs-primary-only',
      value: readReplicas,
      unit: 'ops/s',
      baseline: { name: 'primary-only-cluster', value: readPrimary },
    },
    {
      name: 'failed-reads-while-replica-killed',
      value: withRetry.errors,
      unit: `failed reads (of ${withRetry.reads})`,
      baseline: { name: 'same-cluster-retries-off', value: withoutRetry.errors },
      lowerIsBetter: true,
    },
    {
      name: 'failed-reads-while-replica-killed-time-until-excluded',
      value: withRetry.excludedMs,
      unit: 'ms',
      baseline: { name: 'idle-cluster-periodic-checks-only', value: idleExcludedMs },
      lowerIsBetter: true,
    },
  ]);
} finally {
  await pgc.stop();
}
