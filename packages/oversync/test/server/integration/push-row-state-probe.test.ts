/**
 * A small push commit reads the row_state of its own keys by primary key, however large row_state
 * is. The planner cannot tell how few keys a chunk's JSON (or an `unnest`) yields, and once it
 * joined them by hashing a sequential scan of the whole table: every 10-row commit read every row
 * any user had ever synced (8 ms of CPU per commit at 5,000 rows, issue #19's ingest).
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createFixture, emptyScopeDevice, type Fixture, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
/** Sequential scans of sync.row_state in each service transaction, in order. */
const rowStateScans: number[] = [];
beforeAll(async () => {
  fx = await createFixture();
  const cluster = fx.cluster as unknown as {
    runTx: (fn: (tx: unknown) => Promise<unknown>, opts?: unknown) => Promise<unknown>;
  };
  const runTx = cluster.runTx.bind(fx.cluster);
  cluster.runTx = (fn, opts) =>
    runTx(async (tx) => {
      // The backend's sequential scans not yet flushed to pg_stat_user_tables: nothing is flushed
      // inside a transaction, so the difference is this transaction's.
      const scans = async () =>
        (
          await (tx as { query: (sql: string) => Promise<{ rows: Array<{ n: number }> }> }).query(
            "SELECT pg_stat_get_xact_numscans('sync.row_state'::regclass)::int AS n",
          )
        ).rows[0]!.n;
      const before = await scans();
      const out = await fn(tx);
      rowStateScans.push((await scans()) - before);
      return out;
    }, opts);
  // Other users' history: 5,000 row_state entries not analysed yet, and a chunk table that has seen
  // many sessions (the planner then guesses 50 chunks per session of 100 keys each): the state in
  // which the ingest bench found every commit hashing a scan of row_state. (Where the planner's
  // guesses differ it may pick the probe on its own; this is the case that must not scan.)
  await fx.cluster.query(
    `INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
     SELECT -(g % 300) - 1, 1, uuid_send(gen_random_uuid()), 1, FALSE FROM generate_series(1, 5000) g`,
  );
  await fx.cluster.query(
    `INSERT INTO sync.push_session_chunks (push_id, start_row_ordinal, row_count, meta, payloads)
     SELECT gen_random_uuid(), 0, 1, '{}', '' FROM generate_series(1, 20000)`,
  );
});
afterAll(async () => {
  await fx?.close();
});

test('the commit of a 10-row bundle probes row_state by key, never scans it (inserts, then updates)', async () => {
  const d = await emptyScopeDevice(fx.app);
  const ids = Array.from({ length: 10 }, () => randomUUID());
  rowStateScans.length = 0;
  const first = await d.push(ids.map((id, i) => userRow(id, `n${i}`)));
  expect(first.status).toBe(200);
  const seq = first.body['bundle_seq'] as number;
  const second = await d.push(ids.map((id, i) => userRow(id, `m${i}`, seq, 'UPDATE')));
  expect(second.status).toBe(200);
  // create, chunk, commit of each push ran in service transactions (some in one round trip without
  // runTx): every transaction seen scanned row_state 0 times, and the commits were among them.
  expect(rowStateScans.length).toBeGreaterThanOrEqual(2);
  expect(rowStateScans).toEqual(rowStateScans.map(() => 0));
});
