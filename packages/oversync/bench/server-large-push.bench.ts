// One large push through the real HTTP API (issue #19 point 2), against a server in its own process
// (bench/server-child.ts) on a private embedded PostgreSQL. go-oversync v1 flow: create session,
// upload chunks of 1,000 rows, commit, read the committed rows back in pages of 1,000 (what a
// client does to replay its own bundle). Sizes: 50,000 rows; with X_BENCH_SCALE=1 (`pnpm
// bench:scale`) 200,000; LARGE_PUSH_ROWS=50000,100000 picks others. One fresh server per size.
// - large-push-<n>-rows-per-s: rows/s of create + chunks + commit; baseline = a plain multi-row
//   INSERT of the same rows (10,000 rows per statement, one transaction) into a same-shaped table
//   without triggers, from this process.
// - large-push-<n>-with-readback-rows-per-s: the same plus reading every committed row back.
// - large-push-<n>-server-rss-growth-mb: the server's peak RSS during the push minus its RSS before.
// - large-push-<n>-server-eld-max-ms / -eld-p99-ms: the server's event-loop delay during the push
//   (monitorEventLoopDelay, resolution 10 ms); baseline = the same while idle (side requests only).
// - large-push-<n>-side-request-p99-ms: another user's small pull, every 10 ms beside the push;
//   baseline = the same requests with no push running.
// - load-average-1m: the machine's load when the bench ended (2 cores shared).
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchResult, percentile, reportBench } from '@x/testkit/bench';
import pg from 'pg';
import { BUSINESS_SCHEMA_SQL, insertRow } from '../test/server/fixture.js';
import {
  benchDatabase,
  type Call,
  httpClient,
  PLAIN_USERS_SQL,
  postgresLogTail,
  resetStatements,
  startServerChild,
  topStatements,
  usersInsert,
} from './setup.js';

const SCALE = process.env.X_BENCH_SCALE === '1';
const SIZES = (process.env.LARGE_PUSH_ROWS ?? (SCALE ? '200000' : '50000')).split(',').map(Number);
const CHUNK = 1000;
const PAGE = 1000;
const SIDE_EVERY_MS = 10;
const log = (msg: string) => process.stderr.write(`[server-large-push] ${new Date().toISOString()} ${msg}\n`);

const { pgCluster, url } = await benchDatabase(
  'oversync_large_push_bench',
  BUSINESS_SCHEMA_SQL,
  PLAIN_USERS_SQL,
);
const plain = new pg.Client({ connectionString: url });
await plain.connect();

type Row = { id: string; name: string; email: string };
const rowsFor = (n: number, tag: string): Row[] =>
  Array.from({ length: n }, (_, i) => ({
    id: randomUUID(),
    name: `${tag} user ${i}`,
    email: `${tag}.${i}@example.com`,
  }));

async function plainInsert(rows: Row[]): Promise<number> {
  const scope = `plain-${randomUUID()}`;
  const t0 = performance.now();
  await plain.query('BEGIN');
  for (let i = 0; i < rows.length; i += 10_000) {
    const { text, params } = usersInsert('plain.users', scope, rows.slice(i, i + 10_000));
    await plain.query(text, params);
  }
  await plain.query('COMMIT');
  return performance.now() - t0;
}

/** Side requests: another user's small pull every SIDE_EVERY_MS until stopped; their latencies. */
function sideRequests(call: Call) {
  const samples: number[] = [];
  let running = true;
  const done = (async () => {
    while (running) {
      const t0 = performance.now();
      await call('GET', '/sync/pull?after_bundle_seq=0');
      samples.push(performance.now() - t0);
      await sleep(SIDE_EVERY_MS);
    }
  })();
  return {
    samples,
    async stop() {
      running = false;
      await done;
    },
  };
}

const results: BenchResult[] = [];
for (const n of SIZES) {
  const label = n % 1000 === 0 ? `${n / 1000}k` : String(n);
  const baselineMs = await plainInsert(rowsFor(n, 'plain'));
  log(`${label}: plain INSERT ${Math.round(baselineMs)} ms`);

  const server = await startServerChild(url);
  // The side user: one small bundle to pull.
  const side = httpClient(server.baseUrl, `side-${randomUUID()}`);
  await side('POST', '/sync/connect', { has_local_pending_rows: false });
  const sc = await side('POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: 1 });
  const one = rowsFor(1, 'side')[0]!;
  await side('POST', `/sync/push-sessions/${sc['push_id']}/chunks`, {
    start_row_ordinal: 0,
    rows: [insertRow('users', one)],
  });
  await side('POST', `/sync/push-sessions/${sc['push_id']}/commit`);

  // Idle: side requests alone (and warm-up of the side path).
  await server.reset();
  let s = sideRequests(side);
  await sleep(2_000);
  await s.stop();
  const idleSide = s.samples.slice(20);
  const idle = await server.stats();

  const user = `large-${randomUUID()}`;
  const call = httpClient(server.baseUrl, user);
  await call('POST', '/sync/connect', { has_local_pending_rows: false });
  const rows = rowsFor(n, 'push');
  await server.reset();
  await resetStatements(url);
  s = sideRequests(side);
  const t0 = performance.now();
  const created = await call('POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: n });
  for (let i = 0; i < n; i += CHUNK) {
    await call('POST', `/sync/push-sessions/${created['push_id']}/chunks`, {
      start_row_ordinal: i,
      rows: rows.slice(i, i + CHUNK).map((r) => insertRow('users', r)),
    });
  }
  const tCommit = performance.now();
  const committed = await call('POST', `/sync/push-sessions/${created['push_id']}/commit`);
  const pushMs = performance.now() - t0;
  log(`${label}: chunks ${Math.round(tCommit - t0)} ms, commit ${Math.round(pushMs - (tCommit - t0))} ms`);
  const top = await topStatements(url);
  if (top) log(`${label}: statements by execution time:\n${top}`);
  let got = 0;
  for (let after: number | undefined; ; ) {
    const page = await call(
      'GET',
      `/sync/committed-bundles/${committed['bundle_seq']}/rows?max_rows=${PAGE}${after === undefined ? '' : `&after_row_ordinal=${after}`}`,
    );
    got += (page['rows'] as unknown[]).length;
    after = page['next_row_ordinal'] as number;
    if (!page['has_more']) break;
  }
  const totalMs = performance.now() - t0;
  await s.stop();
  const during = await server.stats();
  if (got !== n || committed['row_count'] !== n)
    throw new Error(`committed ${committed['row_count']}, read back ${got} of ${n}`);
  log(
    `${label}: push ${Math.round(pushMs)} ms, with readback ${Math.round(totalMs)} ms, server ${JSON.stringify(during)}, ${n / CHUNK + 2} requests`,
  );
  await server.exit();
  if (process.env.BENCH_SLOW_SQL_MS) process.stderr.write(server.stderr);

  const perS = (ms: number) => (n * 1000) / ms;
  results.push(
    {
      name: `large-push-${label}-rows-per-s`,
      value: perS(pushMs),
      unit: 'rows/s',
      baseline: { name: 'plain multi-row INSERT', value: perS(baselineMs) },
    },
    {
      name: `large-push-${label}-with-readback-rows-per-s`,
      value: perS(totalMs),
      unit: 'rows/s',
      baseline: { name: 'plain multi-row INSERT', value: perS(baselineMs) },
    },
    {
      name: `large-push-${label}-server-rss-growth-mb`,
      value: during.peakRssMb - during.baseRssMb,
      unit: 'MB',
      baseline: null,
      lowerIsBetter: true,
    },
    {
      name: `large-push-${label}-server-eld-max-ms`,
      value: during.eldMaxMs,
      unit: 'ms',
      baseline: { name: 'idle server, side requests only', value: idle.eldMaxMs },
      lowerIsBetter: true,
    },
    {
      name: `large-push-${label}-server-eld-p99-ms`,
      value: during.eldP99Ms,
      unit: 'ms',
      baseline: { name: 'idle server, side requests only', value: idle.eldP99Ms },
      lowerIsBetter: true,
    },
    {
      name: `large-push-${label}-side-request-p99-ms`,
      value: percentile(s.samples, 99),
      unit: 'ms',
      baseline: { name: 'same requests, no push running', value: percentile(idleSide, 99) },
      lowerIsBetter: true,
    },
  );
}
results.push({ name: 'large-push-load-average-1m', value: loadavg()[0]!, unit: 'load', baseline: null });
await reportBench(process.env.X_BENCH_PACKAGE ?? 'oversync', results);
if (SCALE) process.stdout.write(`${JSON.stringify({ bench: 'server-large-push', results })}\n`);

await plain.end();
const pgLog = await postgresLogTail(pgCluster);
if (pgLog) log(`postgres log:\n${pgLog}`);
await pgCluster.stop();
