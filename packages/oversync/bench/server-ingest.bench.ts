// Ingest (issue #19 point 3): 50 concurrent clients (one user each, real HTTP) push 10-row bundles
// back to back for INGEST_SECONDS (10) against one server process (bench/server-child.ts) on a
// private embedded PostgreSQL: first as one request each (POST /sync/push, what the @x/oversync
// client sends), then as the go-oversync v1 flow (create session, one chunk, commit).
// - ingest-rows-per-s (one request) / ingest-session-rows-per-s (three): committed rows/s;
//   baseline = the same rows as plain 10-row INSERTs (one transaction each) from 50 concurrent
//   connections of this process.
// - ingest-push-p50-ms / -p99-ms, ingest-session-push-…: one push; baseline = the plain INSERT's.
// - ingest-sql-round-trips-per-bundle, ingest-session-…: statements the server sent PostgreSQL
//   (BEGIN/COMMIT included) per committed bundle; baseline = the plain path's 3 (BEGIN, INSERT,
//   COMMIT); ingest-sql-round-trips-create/-chunk/-commit: the session flow's, per request.
// BENCH_PG_SETTINGS="name=value,…" adds PostgreSQL settings (e.g. auto_explain's) and
// BENCH_PG_LOG_LINES=<n> prints the end of PostgreSQL's log (where auto_explain writes plans);
// BENCH_PG_STATEMENTS=1 prints the statements by execution and planning time (pg_stat_statements),
// INGEST_SAMPLE_WAITS=1 what the server's sessions wait on; each flow also prints the CPU the
// server, PostgreSQL and this process's clients spent in it, and how idle the machine stayed.
// - ingest-load-average-1m: the machine's load when the bench ended.
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { latencyPercentiles, reportBench } from '@x/testkit/bench';
import pg from 'pg';
import { BUSINESS_SCHEMA_SQL, insertRow } from '../test/server/fixture.js';
import {
  benchDatabase,
  httpClient,
  machineCpuMs,
  PLAIN_USERS_SQL,
  postgresCpuMs,
  postgresLogTail,
  resetStatements,
  startServerChild,
  topStatements,
} from './setup.js';

const CLIENTS = Number(process.env.INGEST_CLIENTS ?? 50);
const SECONDS = Number(process.env.INGEST_SECONDS ?? 10);
const ROWS = 10;
const log = (msg: string) => process.stderr.write(`[server-ingest] ${new Date().toISOString()} ${msg}\n`);

const { pgCluster, url } = await benchDatabase('oversync_ingest_bench', BUSINESS_SCHEMA_SQL, PLAIN_USERS_SQL);

const rowsFor = (n: number) =>
  Array.from({ length: n }, (_, i) => {
    const id = randomUUID();
    return { id, name: `user ${i}`, email: `u${i}@example.com` };
  });

// ---- baseline: plain 10-row INSERTs from CLIENTS connections --------------------------------
const pool = new pg.Pool({ connectionString: url, max: CLIENTS });
const plainMs: number[] = [];
let plainRows = 0;
{
  const deadline = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const scope = `plain-${randomUUID()}`;
      while (performance.now() < deadline) {
        const rows = rowsFor(ROWS);
        const s = performance.now();
        const c = await pool.connect();
        try {
          await c.query('BEGIN');
          await c.query(
            `INSERT INTO plain.users (_sync_scope_id, id, name, email) VALUES ${rows.map((_, i) => `($1, $${i * 3 + 2}, $${i * 3 + 3}, $${i * 3 + 4})`).join(', ')}`,
            [scope, ...rows.flatMap((r) => [r.id, r.name, r.email])],
          );
          await c.query('COMMIT');
        } finally {
          c.release();
        }
        plainMs.push(performance.now() - s);
        plainRows += ROWS;
      }
    }),
  );
  plainRows = (plainRows * 1000) / (performance.now() - t0);
}
await pool.end();
log(`plain: ${Math.round(plainRows)} rows/s`);

// ---- sync server ------------------------------------------------------------------------------
const server = await startServerChild(url, { BENCH_POOL_MAX: process.env.BENCH_POOL_MAX ?? '20' });
const clients = await Promise.all(
  Array.from({ length: CLIENTS }, async () => {
    const call = httpClient(server.baseUrl, `ingest-${randomUUID()}`, 'dev');
    await call('POST', '/sync/connect', { has_local_pending_rows: false });
    return { call, next: 1 };
  }),
);
/** Between the requests of one push (the per-request statement count below); none in the run. */
type Step = (request: 'create' | 'chunk' | 'commit' | 'push') => Promise<void>;
type Flow = 'session' | 'single';
/**
 * One 10-row bundle: `session` is protocol v1's three requests (create, chunk, commit: what a
 * go-oversync client sends), `single` the one-request push (feature single_request_push: what the
 * @x/oversync client sends for a bundle of one chunk).
 */
async function push(c: (typeof clients)[number], flow: Flow, step?: Step): Promise<void> {
  const rows = rowsFor(ROWS).map((r) => insertRow('users', r));
  if (flow === 'single') {
    await step?.('push');
    await c.call('POST', '/sync/push', { source_bundle_id: c.next, rows });
    c.next++;
    return;
  }
  await step?.('create');
  const created = await c.call('POST', '/sync/push-sessions', {
    source_bundle_id: c.next,
    planned_row_count: ROWS,
  });
  await step?.('chunk');
  await c.call('POST', `/sync/push-sessions/${created['push_id']}/chunks`, { start_row_ordinal: 0, rows });
  await step?.('commit');
  await c.call('POST', `/sync/push-sessions/${created['push_id']}/commit`);
  c.next++;
}

/** Every client pushing `flow` bundles back to back for SECONDS; what it cost and where. */
async function run(flow: Flow) {
  // warm-up: one push per client
  await Promise.all(clients.map((c) => push(c, flow)));
  await server.reset();
  const pushMs: number[] = [];
  // INGEST_SAMPLE_WAITS=1: what the server's sessions are doing, sampled every 50 ms during the run.
  const waits = new Map<string, number>();
  let sampling = process.env.INGEST_SAMPLE_WAITS === '1';
  const sampler = sampling
    ? (async () => {
        const c = new pg.Client({ connectionString: url });
        await c.connect();
        while (sampling) {
          const r = await c.query<{ k: string }>(
            `SELECT state || ' | ' || coalesce(wait_event_type || ':' || wait_event, 'cpu') || ' | ' ||
                    CASE WHEN state = 'active' THEN left(regexp_replace(query, '\\s+', ' ', 'g'), 60) ELSE '' END AS k
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`,
          );
          for (const { k } of r.rows) waits.set(k, (waits.get(k) ?? 0) + 1);
          await new Promise((res) => setTimeout(res, 50));
        }
        await c.end();
      })()
    : undefined;
  await resetStatements(url);
  const pgCpu0 = await postgresCpuMs();
  const machine0 = await machineCpuMs();
  const benchCpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + SECONDS * 1000;
  await Promise.all(
    clients.map(async (c) => {
      while (performance.now() < deadline) {
        const s = performance.now();
        await push(c, flow);
        pushMs.push(performance.now() - s);
      }
    }),
  );
  const elapsed = performance.now() - t0;
  const pgCpuMs = (await postgresCpuMs()) - pgCpu0;
  const machine1 = await machineCpuMs();
  const benchCpu = process.cpuUsage(benchCpu0);
  const machineBusy = machine1.busy - machine0.busy;
  const machineIdle = machine1.idle - machine0.idle;
  const idlePct = machineBusy + machineIdle > 0 ? (100 * machineIdle) / (machineBusy + machineIdle) : 0;
  sampling = false;
  await sampler;
  if (waits.size > 0) {
    const top = [...waits].sort((a, b) => b[1] - a[1]).slice(0, 25);
    log(`${flow}: server sessions sampled:\n${top.map(([k, n]) => `${n}\t${k}`).join('\n')}`);
  }
  const stats = await server.stats();
  const top = await topStatements(url);
  if (top) log(`${flow}: statements by execution time:\n${top}`);
  // One more push alone, the statement counter read between its requests: statements per request.
  const perRequest: Record<string, number> = {};
  {
    let current: string | undefined;
    const note = async () => {
      if (current) perRequest[current] = (await server.stats()).statements;
    };
    await push(clients[0]!, flow, async (request) => {
      await note();
      await server.reset();
      current = request;
    });
    await note();
  }
  log(`${flow}: statements per request: ${JSON.stringify(perRequest)}`);
  const bundles = pushMs.length;
  log(
    `${flow}: ${bundles} bundles in ${Math.round(elapsed)} ms, ${stats.statements} statements, eld max ${stats.eldMaxMs} ms, server cpu ${Math.round(stats.cpuMs)} ms (user ${Math.round(stats.cpuUserMs)} ms), postgres cpu ${Math.round(pgCpuMs)} ms, bench clients cpu ${Math.round((benchCpu.user + benchCpu.system) / 1000)} ms, machine ${idlePct.toFixed(0)} % idle`,
  );
  return {
    rowsPerS: (bundles * ROWS * 1000) / elapsed,
    pushMs,
    statementsPerBundle: stats.statements / bundles,
    perRequest,
  };
}

const single = await run('single');
const session = await run('session');
if (process.env.BENCH_LOG_SQL === '1' || process.env.BENCH_SLOW_SQL_MS) process.stderr.write(server.stderr);
await server.exit();

/** One flow's figures: rows/s, push latency and statements per bundle, beside the plain INSERT's. */
const flowFigures = (prefix: string, flow: Awaited<ReturnType<typeof run>>) => [
  {
    name: `${prefix}-rows-per-s`,
    value: flow.rowsPerS,
    unit: 'rows/s',
    baseline: { name: 'plain 10-row INSERT transactions', value: plainRows },
  },
  ...latencyPercentiles(`${prefix}-push`, flow.pushMs, {
    name: (p) => `plain INSERT transaction p${p}`,
    samples: plainMs,
  }),
  {
    name: `${prefix}-sql-round-trips-per-bundle`,
    value: flow.statementsPerBundle,
    unit: 'statements',
    baseline: { name: 'plain INSERT transaction', value: 3 },
    lowerIsBetter: true,
  },
];

await reportBench(process.env.X_BENCH_PACKAGE ?? 'oversync', [
  ...flowFigures('ingest', single),
  ...flowFigures('ingest-session', session),
  ...(['create', 'chunk', 'commit'] as const).map((request) => ({
    name: `ingest-sql-round-trips-${request}`,
    value: session.perRequest[request] ?? Number.NaN,
    unit: 'statements',
    baseline: null,
  })),
  { name: 'ingest-load-average-1m', value: loadavg()[0]!, unit: 'load', baseline: null },
]);
const pgLog = await postgresLogTail(pgCluster);
if (pgLog) log(`postgres log:\n${pgLog}`);
await pgCluster.stop();
