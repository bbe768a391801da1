// @x/oversync/server figures on a private embedded PostgreSQL, through the fastify plugin (inject):
// - push-10k-rows-vs-plain-insert: rows/s of a 10,000-row push (create + 10 chunks + commit);
//   baseline = one plain multi-row INSERT of the same rows into the same table (sync triggers off).
//   Push, pull and their baselines: median of BENCH_ROUNDS (3) rounds after one untimed warm-up round.
// - pull-10k-rows-per-s: rows/s of GET /sync/pull returning those 10,000 rows; baseline = a plain
//   SELECT of the same rows encoded to JSON.
// - snapshot-100k-rows-vs-select-json: rows/s of a 100,000-row snapshot session (create + every
//   chunk of 5,000); baseline = a plain SELECT of the same rows encoded to JSON. Median of
//   SNAPSHOT_ROUNDS (3) rounds after one untimed warm-up round of both.
// - watch-commit-to-event-p50-ms / -p99-ms: from the start of a one-row server-side bundle write
//   to its SSE `bundle` event on an open GET /sync/watch stream (real socket); baseline = the
//   write's own duration (until its COMMIT returned).
import { randomUUID } from 'node:crypto';
import { createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import { latencyPercentiles, reportBench } from '@x/testkit/bench';
import Fastify from 'fastify';
import { BUSINESS_SCHEMA_SQL, BUSINESS_TABLES, bundleEvents, insertRow } from '../test/server/fixture.js';
import { benchDatabase, usersInsert } from './setup.js';

const ROWS = Number(process.env.PUSH_ROWS ?? 10_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CHUNK = 1000;
const log = (msg: string) => process.stderr.write(`[server.bench] ${new Date().toISOString()} ${msg}\n`);

const { pgCluster, url } = await benchDatabase('oversync_server_bench', BUSINESS_SCHEMA_SQL);
const db = createCluster({ primary: url });
const SNAPSHOT_ROWS = Number(process.env.SNAPSHOT_ROWS ?? 100_000);
const WATCH_ROUNDS = Number(process.env.WATCH_ROUNDS ?? 100);
const SNAPSHOT_ROUNDS = Number(process.env.SNAPSHOT_ROUNDS ?? 3);
const service = createSyncService({
  db,
  registeredTables: BUSINESS_TABLES,
  limits: { retainedBundlesPerUser: 100_000 },
  bundleChangeWatch: { enabled: true },
});
await service.bootstrap();
const app = Fastify({ logger: false });
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => req.headers['x-user'] as string | undefined,
});
await app.ready();

const rowsFor = (tag: string) =>
  Array.from({ length: ROWS }, (_, i) => {
    const id = randomUUID();
    return { id, name: `${tag} user ${i}`, email: `${tag}.${i}@example.com` };
  });

async function call(user: string, method: 'GET' | 'POST', path: string, body?: unknown) {
  const res = await app.inject({
    method,
    url: path,
    headers: { 'x-user': user, 'oversync-source-id': 'bench-device', 'content-type': 'application/json' },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
  if (res.statusCode !== 200) throw new Error(`${method} ${path}: ${res.statusCode} ${res.body}`);
  return res.json() as Record<string, unknown>;
}

async function push(user: string, rows: ReturnType<typeof rowsFor>): Promise<number> {
  const t0 = performance.now();
  const created = await call(user, 'POST', '/sync/push-sessions', {
    source_bundle_id: 1,
    planned_row_count: rows.length,
  });
  for (let i = 0; i < rows.length; i += CHUNK) {
    await call(user, 'POST', `/sync/push-sessions/${created['push_id']}/chunks`, {
      start_row_ordinal: i,
      rows: rows.slice(i, i + CHUNK).map((r) => insertRow('users', r)),
    });
  }
  await call(user, 'POST', `/sync/push-sessions/${created['push_id']}/commit`);
  return performance.now() - t0;
}

async function plainInsert(scope: string, rows: ReturnType<typeof rowsFor>): Promise<number> {
  const t0 = performance.now();
  await db.runTx(async (tx) => {
    await tx.query('SET LOCAL session_replication_role = replica'); // no sync triggers: the bare insert
    const { text, params } = usersInsert('business.users', scope, rows);
    await tx.query(text, params);
  });
  return performance.now() - t0;
}

/** The baseline of pull and snapshot: a plain SELECT of `user`'s rows, encoded to JSON; its ms. */
async function selectJson(user: string): Promise<number> {
  const t0 = performance.now();
  const sel = await db.query<Record<string, unknown>>(
    'SELECT id, name, email, created_at, updated_at FROM business.users WHERE _sync_scope_id = $1',
    [user],
  );
  JSON.stringify(sel.rows);
  return performance.now() - t0;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pushMs: number[] = [];
const insertMs: number[] = [];
const pullMs: number[] = [];
const selectMs: number[] = [];
// Round 0 warms up both sides untimed (JIT of the push path's JS, plan caches, fresh pages); the
// figures are medians of the ROUNDS (3) timed rounds after it.
for (let round = 0; round <= ROUNDS; round++) {
  const user = `bench-${randomUUID()}`;
  await call(user, 'POST', '/sync/connect', { has_local_pending_rows: false });
  const insertTook = await plainInsert(`plain-${randomUUID()}`, rowsFor('plain'));
  const pushTook = await push(user, rowsFor('push'));
  if (round > 0) insertMs.push(insertTook);
  if (round > 0) pushMs.push(pushTook);

  const t0 = performance.now();
  const pulled = await call(user, 'GET', '/sync/pull?after_bundle_seq=0');
  if (round > 0) pullMs.push(performance.now() - t0);
  const got = (pulled['bundles'] as Array<{ rows: unknown[] }>)[0]!.rows.length;
  if (got !== ROWS) throw new Error(`pulled ${got} rows, expected ${ROWS}`);

  const selectTook = await selectJson(user);
  if (round > 0) selectMs.push(selectTook);
}

log('push/pull done');
// ---- snapshot --------------------------------------------------------------------------------
const snapUser = `snap-${randomUUID()}`;
await service.scopeManager().execWrite(snapUser, { writerId: 'seeder' }, async (tx) => {
  await tx.query(
    `INSERT INTO business.users (id, name, email)
     SELECT gen_random_uuid(), 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, $1) AS i`,
    [SNAPSHOT_ROWS],
  );
});
log('snapshot seeded');
const snapMs: number[] = [];
const snapSelectMs: number[] = [];
// Round 0 is an untimed warm-up of both sides: the first reader of freshly written rows sets their
// hint bits (writes every page), and whichever ran first would pay for the other.
for (let round = 0; round <= SNAPSHOT_ROUNDS; round++) {
  const t0 = performance.now();
  const snap = await call(snapUser, 'POST', '/sync/snapshot-sessions');
  let got = 0;
  for (let after = 0; ; ) {
    const page = await call(
      snapUser,
      'GET',
      `/sync/snapshot-sessions/${snap['snapshot_id']}?after_row_ordinal=${after}&max_rows=5000`,
    );
    got += (page['rows'] as unknown[]).length;
    after = page['next_row_ordinal'] as number;
    if (!page['has_more']) break;
  }
  if (round > 0) snapMs.push(performance.now() - t0);
  if (got !== SNAPSHOT_ROWS) throw new Error(`snapshot returned ${got} rows`);
  const selectTook = await selectJson(snapUser);
  if (round > 0) snapSelectMs.push(selectTook);
}

log('snapshot done');
// ---- watch -------------------------------------------------------------------------------------
const watchUser = `watch-${randomUUID()}`;
await call(watchUser, 'POST', '/sync/connect', { has_local_pending_rows: false });
const base = await app.listen({ port: 0, host: '127.0.0.1' });
const ac = new AbortController();
const res = await fetch(`${base}/sync/watch?after_bundle_seq=0`, {
  headers: { 'x-user': watchUser, 'oversync-source-id': 'watcher' },
  signal: ac.signal,
});
const nextEvent = bundleEvents(res);
await (service as unknown as { bundleChangeListenerReady(): Promise<void> }).bundleChangeListenerReady();
const eventMs: number[] = [];
const commitMs: number[] = [];
for (let i = 1; i <= WATCH_ROUNDS; i++) {
  const t0 = performance.now();
  const event = nextEvent();
  await service.withinSyncBundle(
    { userId: watchUser },
    { sourceId: 'writer', sourceBundleId: i },
    async (tx) => {
      await tx.query('INSERT INTO business.users (id, name, email) VALUES (gen_random_uuid(), $1, $2)', [
        `w${i}`,
        'w@example.com',
      ]);
    },
  );
  commitMs.push(performance.now() - t0);
  const seq = await event;
  eventMs.push(performance.now() - t0);
  if (seq !== i) throw new Error(`watch event for bundle ${seq}, expected ${i}`);
}
ac.abort();
log('watch done');

const perS = (ms: number) => (ROWS * 1000) / ms;
await reportBench('oversync', [
  {
    name: 'push-10k-rows-vs-plain-insert',
    value: perS(median(pushMs)),
    unit: 'rows/s',
    baseline: { name: 'plain multi-row INSERT', value: perS(median(insertMs)) },
  },
  {
    name: 'pull-10k-rows-per-s',
    value: perS(median(pullMs)),
    unit: 'rows/s',
    baseline: { name: 'plain SELECT encoded to JSON', value: perS(median(selectMs)) },
  },
  {
    name: 'snapshot-100k-rows-vs-select-json',
    value: (SNAPSHOT_ROWS * 1000) / median(snapMs),
    unit: 'rows/s',
    baseline: { name: 'plain SELECT encoded to JSON', value: (SNAPSHOT_ROWS * 1000) / median(snapSelectMs) },
  },
  ...latencyPercentiles('watch-commit-to-event', eventMs, {
    name: (p) => `one-row bundle commit p${p}`,
    samples: commitMs,
  }),
]);

await app.close();
await service.close();
await db.close();
await pgCluster.stop();
