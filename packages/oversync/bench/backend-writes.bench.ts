// Backend writes that sync (issue #20 point 3): the cost of capture on an ordinary UPDATE.
// One scope holds BACKEND_ROWS (10k) users in business.users, registered with
// `backendWrites: true`, and the same rows in plain.users (same columns and indexes, no triggers).
// Each round runs, from a bare pg client, `BEGIN; UPDATE … SET name = … WHERE _sync_scope_id = $1;
// COMMIT` on both tables, in alternating order; each figure is the median round.
// - backend-update-10k-ms: the captured UPDATE up to its COMMIT, which also finalises the bundle
//   (10k bundle rows, row_state, hash); baseline = the same UPDATE of plain.users.
// - backend-capture-us-per-row: (captured − plain) / rows, the price of each synced row.
// - backend-update-statement-10k-ms / backend-commit-finalize-10k-ms: the same median split into
//   the UPDATE statement (guard and staging) and its COMMIT (the bundle's finalisation).
// - backend-load-average-1m: the machine's load when the bench ended.
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { createCluster } from '@x/dbx';
import { percentile, reportBench } from '@x/testkit/bench';
import pg from 'pg';
import { createSyncService } from '../src/server/index.js';
import { BUSINESS_SCHEMA_SQL, BUSINESS_TABLES } from '../test/server/fixture.js';
import { benchDatabase, PLAIN_USERS_SQL, usersInsert } from './setup.js';

const ROWS = Number(process.env.BACKEND_ROWS ?? 10_000);
const ROUNDS = Number(process.env.BACKEND_ROUNDS ?? 7);
const log = (msg: string) => process.stderr.write(`[backend-writes] ${new Date().toISOString()} ${msg}\n`);

const { pgCluster, url } = await benchDatabase(
  'oversync_backend_bench',
  BUSINESS_SCHEMA_SQL,
  PLAIN_USERS_SQL,
);
const cluster = createCluster({ primary: url });
const service = createSyncService({
  db: cluster,
  registeredTables: BUSINESS_TABLES.map((t) => ({ ...t, backendWrites: t.table === 'users' })),
  limits: { retainedBundlesPerUser: ROUNDS + 10 },
});
await service.bootstrap();

const scope = `bench-${randomUUID()}`;
const rows = Array.from({ length: ROWS }, (_, i) => ({
  id: randomUUID(),
  name: `user ${i}`,
  email: `u${i}@x.test`,
}));
// The scope is initialised by a server write holding its rows; plain.users gets the same rows.
await service.scopeManager().execWrite(scope, { writerId: 'seed' }, async (tx) => {
  for (let i = 0; i < rows.length; i += 1000) {
    const q = usersInsert('business.users', scope, rows.slice(i, i + 1000));
    await tx.query(q.text, q.params);
  }
});
const sql = new pg.Client({ connectionString: url });
await sql.connect();
for (let i = 0; i < rows.length; i += 1000) {
  const q = usersInsert('plain.users', scope, rows.slice(i, i + 1000));
  await sql.query(q.text, q.params);
}
await sql.query('VACUUM ANALYZE business.users');
await sql.query('VACUUM ANALYZE plain.users');

/** One UPDATE of every row of the scope in its own transaction: [statement ms, COMMIT ms]. */
async function timedUpdate(table: string, round: number): Promise<[number, number]> {
  await sql.query('BEGIN');
  const t0 = performance.now();
  const r = await sql.query(`UPDATE ${table} SET name = $2 || id::text WHERE _sync_scope_id = $1`, [
    scope,
    `round ${round} `,
  ]);
  const t1 = performance.now();
  await sql.query('COMMIT');
  const t2 = performance.now();
  if (r.rowCount !== ROWS) throw new Error(`UPDATE ${table} touched ${r.rowCount} rows, not ${ROWS}`);
  return [t1 - t0, t2 - t1];
}

// one warm-up round of each, then ROUNDS measured rounds in alternating order
await timedUpdate('business.users', 0);
await timedUpdate('plain.users', 0);
const captured: Array<[number, number]> = [];
const plain: Array<[number, number]> = [];
for (let round = 1; round <= ROUNDS; round++) {
  if (round % 2 === 0) {
    captured.push(await timedUpdate('business.users', round));
    plain.push(await timedUpdate('plain.users', round));
  } else {
    plain.push(await timedUpdate('plain.users', round));
    captured.push(await timedUpdate('business.users', round));
  }
}
const bundles = await sql.query<{ n: string; rows: string }>(
  `SELECT count(*)::text AS n, max(row_count)::text AS rows FROM sync.bundle_log WHERE source_id = 'oversync-backend-writes'`,
);
log(`${bundles.rows[0]!.n} backend bundles of ${bundles.rows[0]!.rows} rows committed`);
const total = (xs: Array<[number, number]>) => xs.map(([a, b]) => a + b);
const capturedMs = percentile(total(captured), 50);
const plainMs = percentile(total(plain), 50);
const statementMs = percentile(
  captured.map(([a]) => a),
  50,
);
const commitMs = percentile(
  captured.map(([, b]) => b),
  50,
);
const fmt = (xs: Array<[number, number]>) =>
  xs.map(([a, b]) => `${Math.round(a)}+${Math.round(b)}`).join(' ');
log(`statement+commit ms: captured ${fmt(captured)}; plain ${fmt(plain)}`);

await sql.end();
await service.close();
await cluster.close();

await reportBench(process.env.X_BENCH_PACKAGE ?? 'oversync', [
  {
    name: 'backend-update-10k-ms',
    value: capturedMs,
    unit: 'ms',
    baseline: { name: 'the same UPDATE without capture', value: plainMs },
    lowerIsBetter: true,
  },
  {
    name: 'backend-capture-us-per-row',
    value: ((capturedMs - plainMs) * 1000) / ROWS,
    unit: 'µs/row',
    baseline: null,
  },
  {
    name: 'backend-update-statement-10k-ms',
    value: statementMs,
    unit: 'ms',
    baseline: {
      name: 'the plain UPDATE statement',
      value: percentile(
        plain.map(([a]) => a),
        50,
      ),
    },
    lowerIsBetter: true,
  },
  {
    name: 'backend-commit-finalize-10k-ms',
    value: commitMs,
    unit: 'ms',
    baseline: {
      name: 'the plain COMMIT',
      value: percentile(
        plain.map(([, b]) => b),
        50,
      ),
    },
    lowerIsBetter: true,
  },
  { name: 'backend-load-average-1m', value: loadavg()[0]!, unit: 'load', baseline: null },
]);
await pgCluster.stop();
