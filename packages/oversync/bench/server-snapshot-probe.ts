// Probe (issue #19 point 1): where a large snapshot session's time goes, service API in process.
// SNAPSHOT_ROWS (100,000) rows in one scope, SNAPSHOT_ROUNDS (3) rounds; per round one JSON line:
// the create's ms, the first 5,000-row chunk's ms after it, and all chunks' ms (the chunks parse
// payloads here, unlike the HTTP route). EXPLAIN=1 adds the EXPLAIN (ANALYZE, BUFFERS) of the users
// table's first block-writing statement (STREAM=1: of the streamed build's cursor instead;
// FETCHTEST=1 times a plain FETCH loop over that cursor).
import { randomUUID } from 'node:crypto';
import { createCluster } from '@x/dbx';
import { createSyncService, type SyncQuerier, type SyncTxOptions } from '@x/oversync/server';
import { BUSINESS_SCHEMA_SQL, BUSINESS_TABLES } from '../test/server/fixture.js';
import { benchDatabase } from './setup.js';

const N = Number(process.env.SNAPSHOT_ROWS ?? 100_000);
const ROUNDS = Number(process.env.SNAPSHOT_ROUNDS ?? 3);
const log = (msg: string) => process.stderr.write(`[snapshot-probe] ${new Date().toISOString()} ${msg}\n`);
const { pgCluster, url } = await benchDatabase('oversync_snapshot_probe', BUSINESS_SCHEMA_SQL);
const db = createCluster({ primary: url });
let captured: { sql: string; params: readonly unknown[] } | undefined;
const spy = {
  query: db.query.bind(db),
  connect: db.connect.bind(db),
  runTx: <T>(fn: (tx: SyncQuerier) => Promise<T>, opts?: SyncTxOptions) =>
    db.runTx(
      (tx) =>
        fn({
          query: <R>(sql: string, params?: readonly unknown[]) => {
            if (process.env.STREAM && sql.includes('DECLARE oversync_snapshot_rest') && !captured)
              captured = {
                sql: sql.replace(/^\s*DECLARE oversync_snapshot_rest NO SCROLL CURSOR FOR/, ''),
                params: [],
              };
            if (
              !process.env.STREAM &&
              sql.includes('INSERT INTO sync.snapshot_session_blocks') &&
              sql.includes('"users"') &&
              !captured
            )
              captured = { sql, params: params ?? [] };
            return tx.query<R>(sql, params);
          },
        }),
      opts,
    ),
};
const service = createSyncService({ db: spy as never, registeredTables: BUSINESS_TABLES });
await service.bootstrap();
const user = `snap-${randomUUID()}`;
await service.scopeManager().execWrite(user, { writerId: 'seeder' }, async (tx) => {
  await tx.query(
    `INSERT INTO business.users (id, name, email)
     SELECT gen_random_uuid(), 'user ' || i, 'user' || i || '@example.com' FROM generate_series(1, $1) AS i`,
    [N],
  );
});
await db.query('VACUUM ANALYZE business.users');
await db.query('VACUUM ANALYZE sync.row_state');
log(`seeded ${N}`);
const actor = { userId: user, sourceId: 'probe' };
for (let r = 0; r < ROUNDS; r++) {
  const t0 = performance.now();
  const s = await service.createSnapshotSession(actor);
  const ms = performance.now() - t0;
  const t1 = performance.now();
  let after = 0;
  let firstMs = 0;
  for (;;) {
    const page = await service.getSnapshotChunk(actor, s.snapshot_id, {
      afterRowOrdinal: after,
      maxRows: 5000,
    });
    if (after === 0) firstMs = performance.now() - t1;
    after = page.next_row_ordinal;
    if (!page.has_more) break;
  }
  const readMs = performance.now() - t1;
  console.log(
    JSON.stringify({
      rows: s.row_count,
      bytes: s.byte_count,
      createMs: Math.round(ms),
      firstChunkMs: Math.round(firstMs),
      allChunksMs: Math.round(readMs),
    }),
  );
  await service.deleteSnapshotSession(actor, s.snapshot_id);
}
if (process.env.FETCHTEST && captured) {
  const pgm = await import('pg');
  const c = new pgm.default.Client({ connectionString: url });
  await c.connect();
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
  await c.query(`SET LOCAL work_mem = '128MB'`);
  await c.query('SET LOCAL cursor_tuple_fraction = 1');
  if (process.env.FETCHN) await c.query(`SET LOCAL enable_nestloop = off`);
  const t0 = performance.now();
  await c.query(`DECLARE x NO SCROLL CURSOR FOR ${captured.sql}`);
  let n = 0;
  let first = 0;
  for (;;) {
    const r = await c.query('FETCH 4096 FROM x');
    if (!first) first = performance.now() - t0;
    n += r.rows.length;
    if (r.rows.length === 0) break;
  }
  console.log(
    JSON.stringify({ fetchRows: n, firstMs: Math.round(first), totalMs: Math.round(performance.now() - t0) }),
  );
  await c.query('ROLLBACK');
  await c.end();
}
if (process.env.EXPLAIN && captured) {
  const c = captured;
  await db
    .runTx(
      async (tx) => {
        await tx.query(`SET LOCAL work_mem = '64MB'`);
        await tx.query('SET LOCAL enable_nestloop = off');
        if (process.env.RANGE) await tx.query('SET LOCAL enable_seqscan = off');
        const r = await tx.query<{ 'QUERY PLAN': string }>(
          `EXPLAIN (ANALYZE, BUFFERS, VERBOSE) ${c.sql}`,
          c.params.length ? [randomUUID(), ...c.params.slice(1)] : [],
        );
        console.log(r.rows.map((x) => x['QUERY PLAN']).join('\n'));
        throw new Error('rollback');
      },
      { isolation: 'repeatable read' },
    )
    .catch((e) => {
      if ((e as Error).message !== 'rollback') throw e;
    });
}
await service.close();
await db.close();
await pgCluster.stop();
