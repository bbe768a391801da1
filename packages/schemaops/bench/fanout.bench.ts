// @x/schemaops benchmarks on an embedded PostgreSQL (this machine):
//  - fanout-500-tenants-vs-sequential: add a column and an index to 500 tenant schemas through
//    schemaops.run (bounded concurrency, ledger on, the DDL given as SQL text with `applySql`), vs
//    the straightforward sequential loop of the same DDL: per tenant a dbx transaction that sets the
//    search_path and runs the two statements (BEGIN, SET, ALTER, CREATE INDEX, COMMIT: five round
//    trips, no ledger). Reported as wall time; ratio = speedup.
//  - ledger-overhead-pct: the same fan-out with ledger writes (schemaops.run) vs without (the same
//    fan-out code and one-query-per-tenant transactions, no ledger): (with - without) / without * 100.
//    Its baseline is the no-ledger time in ms, so the ratio column is not meaningful for it.
// Also printed, not reported: the sequential loop sending each tenant's transaction as one
// multi-statement query (what the fan-out sends per tenant), to show how much of the speedup is
// round trips rather than concurrency.
// Rounds alternate the variants so load from other processes hits them alike; each figure comes
// from the round with the median ratio (the machine is shared, so single rounds are noisy).
// Run: npx turbo run build --filter=@x/schemaops... && node scripts/bench.mjs schemaops
import { createCluster, type Tx } from '@x/dbx';
import { startPostgres } from '@x/testkit';
import { reportBench } from '@x/testkit/bench';
import { createSchemaOps, DEFAULT_CONCURRENCY, schemaPerTenant } from '../src/index.js';
import { fanOut } from '../src/internal/fanout.js';

const TENANTS = Number(process.env.SCHEMAOPS_BENCH_TENANTS ?? 500);
const ROUNDS = Number(process.env.SCHEMAOPS_BENCH_ROUNDS ?? 5);
const WARMUP = Number(process.env.SCHEMAOPS_BENCH_WARMUP ?? 3);
const CONCURRENCY = Number(process.env.SCHEMAOPS_BENCH_CONCURRENCY ?? DEFAULT_CONCURRENCY);
const ROWS = 50;
const PROJECT = 'bench';

const pg = await startPostgres({ replicas: 0 });
const cluster = createCluster({
  primary: pg.primary.url,
  pool: { max: CONCURRENCY + 4 },
  slowQueryThresholdMs: null,
});
const q = (s: string) => `"${s.replace(/"/g, '""')}"`;

try {
  const tenants = Array.from(
    { length: TENANTS },
    (_, i) => `${PROJECT}_tenant_${String(i).padStart(4, '0')}`,
  );
  for (let i = 0; i < tenants.length; i += 50) {
    await cluster.exec(
      tenants
        .slice(i, i + 50)
        .map(
          (s) =>
            `create schema ${q(s)}; create table ${q(s)}.items (id int primary key, label text);
             insert into ${q(s)}.items select g, 'x' || g from generate_series(1, ${ROWS}) g;`,
        )
        .join('\n'),
    );
  }
  await cluster.exec(`create schema ${q(PROJECT)}`);

  const source = schemaPerTenant({ cluster });
  const ddlSql = (column: string) =>
    `alter table items add column ${q(column)} text;\n` +
    `create index ${q(`items_${column}_idx`)} on items (${q(column)})`;
  const ops = createSchemaOps({
    cluster,
    tenants: source,
    concurrency: CONCURRENCY,
    operations: {
      add_column: { applySql: ({ request }) => ddlSql((request as { column: string }).column) },
    },
  });
  await ops.migrate();

  // The baseline: what a user writes without schemaops, one dbx transaction per tenant.
  const sequential = async (column: string) => {
    for (const tenant of tenants) {
      await cluster.runTx(async (tx: Tx) => {
        await tx.exec(`set local search_path to ${q(tenant)}`);
        await tx.exec(`alter table items add column ${q(column)} text`);
        await tx.exec(`create index ${q(`items_${column}_idx`)} on items (${q(column)})`);
      });
    }
  };
  // Informational: the sequential loop with each tenant's transaction as one multi-statement query.
  const sequentialOneQuery = async (column: string) => {
    for (const tenant of tenants) {
      await cluster.exec(`set local search_path to ${q(tenant)};\n${ddlSql(column)}`);
    }
  };
  const withLedger = async (column: string) => {
    const op = await ops.run({
      project: PROJECT,
      type: 'add_column',
      request: { column },
      skipBaseDdl: true,
    });
    if (op.status !== 'committed') throw new Error(`operation ended ${op.status}`);
  };
  const withoutLedger = async (column: string) => {
    const r = await fanOut(
      tenants,
      CONCURRENCY,
      (tenant) =>
        source.execSql?.(PROJECT, { kind: 'tenant', tenant }, () => ddlSql(column)) ?? Promise.resolve(),
      { stopOnError: true },
    );
    if (r.failures.length > 0) throw r.failures[0]?.error;
  };
  const timed = async (fn: (c: string) => Promise<void>, column: string) => {
    const t0 = performance.now();
    await fn(column);
    return performance.now() - t0;
  };

  // Warm-up (connections, catalog caches, and the JIT: a run's code path takes several runs to reach
  // steady speed, the state of a long-lived server): every variant WARMUP times.
  const variants = { seq: sequential, fan: withLedger, raw: withoutLedger, seq1: sequentialOneQuery };
  for (let w = 0; w < WARMUP; w++) {
    for (const [k, fn] of Object.entries(variants)) await fn(`warm${w}_${k}`);
  }
  const times: Record<keyof typeof variants, number[]> = { seq: [], fan: [], raw: [], seq1: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const order: Array<keyof typeof times> =
      r % 2 === 0 ? ['seq', 'fan', 'raw', 'seq1'] : ['seq1', 'raw', 'fan', 'seq'];
    for (const k of order) times[k].push(await timed(variants[k], `${k}_${r}`));
  }
  // Each figure comes from one round: the round with the median ratio. Variants of one round ran
  // back to back (the fan-out always between the other two), so they saw the same machine load;
  // medians of the separate series would pair a quiet moment with a busy one.
  const medianRound = (ratio: (r: number) => number): number => {
    const rounds = Array.from({ length: ROUNDS }, (_, r) => r).sort((a, b) => ratio(a) - ratio(b));
    return rounds[Math.floor((ROUNDS - 1) / 2)] as number;
  };
  const at = (k: keyof typeof times, r: number) => times[k][r] as number;
  const s = medianRound((r) => at('seq', r) / at('fan', r));
  const o = medianRound((r) => at('fan', r) / at('raw', r));
  const seq = at('seq', s);
  const fan = at('fan', s);
  const overheadPct = ((at('fan', o) - at('raw', o)) / at('raw', o)) * 100;
  const raw = at('raw', o);
  console.log(
    JSON.stringify(Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.map(Math.round)]))),
  );
  const s1 = medianRound((r) => at('seq1', r) / at('fan', r));
  console.log(
    `tenants=${TENANTS} concurrency=${CONCURRENCY} rounds=${ROUNDS}: sequential ${seq.toFixed(0)} ms, ` +
      `fan-out with ledger ${fan.toFixed(0)} ms (round ${s}, ${(seq / fan).toFixed(2)}x); ` +
      `ledger overhead ${overheadPct.toFixed(1)} % (round ${o}); ` +
      `sequential one query per tenant ${at('seq1', s1).toFixed(0)} ms (${(at('seq1', s1) / at('fan', s1)).toFixed(2)}x, round ${s1}); ` +
      `ledger writes ${ops.metrics().ledgerWrites}`,
  );
  await reportBench('schemaops', [
    {
      name: `fanout-${TENANTS}-tenants-vs-sequential`,
      value: fan,
      unit: 'ms',
      baseline: { name: `sequential-${TENANTS}-tenants-ms`, value: seq },
      lowerIsBetter: true,
    },
    {
      name: 'ledger-overhead-pct',
      value: overheadPct,
      unit: '%',
      baseline: { name: `fanout-${TENANTS}-tenants-no-ledger-ms`, value: raw },
    },
  ]);
  await ops.close();
} finally {
  await cluster.close();
  await pg.stop();
}
