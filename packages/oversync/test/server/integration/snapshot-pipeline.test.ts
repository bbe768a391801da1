/**
 * Pipelined snapshot sessions (issue #19 point 1): a large session is answered once its exact row
 * and byte counts are known and written in the background from the create's MVCC snapshot; chunks
 * wait for blocks not written yet, in any process. A test holds the block table's EXCLUSIVE lock to
 * keep the build from writing, so "not written yet" is a state, not a race; waits are on events
 * (dbx's query channel, pg_stat_activity), never on sleeps.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { join } from 'node:path';
import type { QueryMessage } from '@x/dbx';
import { createSyncService } from '@x/oversync/server';
import { spawnNode, waitFor } from '@x/testkit';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  BUSINESS_TABLES,
  countOf,
  Device,
  insertBypassingCapture,
  insertRow,
  randomUUID,
  sharedFixture,
  userRow,
} from '../fixture.js';

const fx = sharedFixture({ service: { limits: { snapshotPipelineMinRows: 1, snapshotBuildRangeRows: 4 } } });
beforeAll(fx.start);
afterAll(fx.close);

type Chunk = { rows: Array<Record<string, unknown>>; next_row_ordinal: number; has_more: boolean };

async function device() {
  const d = new Device(fx.app, `p-${randomUUID()}`);
  await d.connect(false);
  return d;
}

/** 11 users and 3 posts of `d`: three ranges of users and one of posts, two tables. */
async function seed(d: Device) {
  const users = Array.from({ length: 11 }, () => randomUUID());
  const res = await d.push([
    ...users.map((id, i) => userRow(id, `user ${i}`)),
    ...[0, 1, 2].map((i) =>
      insertRow('posts', { id: randomUUID(), title: `t${i}`, content: 'c', author_id: users[i]! }),
    ),
  ]);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { users, seq: res.body['bundle_seq'] as number };
}

/** Every row of session `sid`, `size` rows a page, through `d`. */
async function allRows(d: Device, sid: string, size = 5) {
  const rows: Chunk['rows'] = [];
  for (let after = 0; ; ) {
    const page = await d.json<Chunk>(
      'GET',
      `/sync/snapshot-sessions/${sid}?after_row_ordinal=${after}&max_rows=${size}`,
    );
    expect(page.status, JSON.stringify(page.body)).toBe(200);
    rows.push(...page.body.rows);
    after = page.body.next_row_ordinal;
    if (!page.body.has_more) return rows;
  }
}

/** The same user's snapshot from a service that writes every session before answering: the oracle. */
async function synchronousSnapshot(d: Device) {
  const sync = createSyncService({
    db: fx.cluster,
    registeredTables: BUSINESS_TABLES,
    limits: { snapshotPipelineMinRows: 0 },
  });
  await sync.bootstrap();
  try {
    const actor = { userId: d.userId, sourceId: d.sourceId };
    const s = await sync.createSnapshotSession(actor);
    const page = await sync.getSnapshotChunk(actor, s.snapshot_id, { afterRowOrdinal: 0, maxRows: 1000 });
    return { session: s, rows: page.rows as unknown as Chunk['rows'] };
  } finally {
    await sync.close();
  }
}

/** An admin connection holding the block table's EXCLUSIVE lock: no build can write a block. */
async function lockBlocks(url: string) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query('BEGIN');
  await c.query('LOCK TABLE sync.snapshot_session_blocks IN EXCLUSIVE MODE');
  let released = false;
  return {
    client: c,
    get released() {
      return released;
    },
    async release() {
      if (released) return;
      released = true;
      await c.query('COMMIT');
      await c.end();
    },
  };
}

/** Resolves at the first statement of this process that reads a session's build row: a chunk found blocks missing. */
function chunkFoundBlocksMissing(): Promise<void> {
  return new Promise((resolve) => {
    const on = (m: unknown) => {
      if ((m as QueryMessage).sql.includes('FROM sync.snapshot_session_builds b WHERE b.snapshot_id')) {
        unsubscribe('x:dbx:query', on);
        resolve();
      }
    };
    subscribe('x:dbx:query', on);
  });
}

const blockCount = (sid: string) =>
  countOf(fx, 'SELECT count(*)::text AS n FROM sync.snapshot_session_blocks WHERE snapshot_id = $1', [sid]);

describe('pipelined snapshot sessions', () => {
  test('a chunk asked before its blocks exist waits for them and gets the snapshot as of the create', async () => {
    const d = await device();
    const { users } = await seed(d);
    const oracle = await synchronousSnapshot(d);
    const lock = await lockBlocks(fx.db.url);
    let sid: string;
    try {
      const created = await d.json('POST', '/sync/snapshot-sessions');
      expect(created.status, JSON.stringify(created.body)).toBe(200);
      // Wire-identical to the synchronous answer: exact row and byte counts.
      expect(created.body).toEqual({
        ...oracle.session,
        snapshot_id: created.body['snapshot_id'],
        expires_at: created.body['expires_at'],
      });
      sid = created.body['snapshot_id'] as string;
      expect(await blockCount(sid)).toBe(0);
      const missing = chunkFoundBlocksMissing();
      const page = d.json<Chunk>('GET', `/sync/snapshot-sessions/${sid}?after_row_ordinal=0&max_rows=1000`);
      await missing;
      // Writes after the create: an update, a new row and a delete; none may show in the snapshot.
      const v = oracle.session.snapshot_bundle_seq;
      const later = await d.push([userRow(users[5]!, 'changed', v, 'UPDATE'), userRow(randomUUID(), 'new')]);
      expect(later.status, JSON.stringify(later.body)).toBe(200);
      await lock.release();
      const got = await page;
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      expect(got.body.rows).toEqual(oracle.rows);
      expect(got.body.has_more).toBe(false);
    } finally {
      await lock.release().catch(() => undefined);
    }
    // Small pages across the range and table boundaries: the same rows, in the same order.
    expect(await allRows(d, sid!, 3)).toEqual(oracle.rows);
  });

  test('row_state that does not match the business rows fails the create, or the chunk, with a 500', async () => {
    const d = await device();
    const { users } = await seed(d);
    const actor = { userId: d.userId, sourceId: d.sourceId };
    // Counts differ (a live row_state entry without its business row): the create fails, as ever.
    await fx.cluster.runTx(async (tx) => {
      await tx.query('SET LOCAL session_replication_role = replica');
      await tx.query('DELETE FROM business.users WHERE _sync_scope_id = $1 AND id = $2', [
        d.userId,
        users[10],
      ]);
    });
    await expect(fx.service.createSnapshotSession(actor)).rejects.toMatchObject({
      code: 'OVERSYNC_INTERNAL',
      message: expect.stringContaining(
        `row ${users[10]!.replaceAll('-', '')} of business.users exists only in row_state (live)`,
      ),
    });
    // Counts equal but one business row without its entry: found while writing the blocks.
    const stray = randomUUID();
    await insertBypassingCapture(fx, d.userId, stray);
    const created = await d.json('POST', '/sync/snapshot-sessions');
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const sid = created.body['snapshot_id'] as string;
    const chunk = await d.json('GET', `/sync/snapshot-sessions/${sid}?after_row_ordinal=0&max_rows=1000`);
    expect(chunk).toMatchObject({ status: 500, body: { error: 'snapshot_chunk_failed' } });
    await expect(
      fx.service.getSnapshotChunk(actor, sid, { afterRowOrdinal: 0, maxRows: 1000 }),
    ).rejects.toMatchObject({
      code: 'OVERSYNC_INTERNAL',
      message: expect.stringContaining(
        `row ${stray.replaceAll('-', '')} of business.users exists only in the business table`,
      ),
    });
  });

  test('a process killed while it writes a session: a chunk on another process answers 404, a new create serves the rows', async () => {
    const d = await device();
    await seed(d);
    const oracle = await synchronousSnapshot(d);
    const child = spawnNode(join(import.meta.dirname, '..', 'snapshot-server-child.ts'), [fx.db.url]);
    try {
      const base = (await child.waitForLine(/^LISTENING /, 60_000)).slice('LISTENING '.length);
      const lock = await lockBlocks(fx.db.url);
      try {
        const res = await fetch(`${base}/sync/snapshot-sessions`, { method: 'POST', headers: d.headers() });
        expect(res.status).toBe(200);
        const sid = ((await res.json()) as { snapshot_id: string }).snapshot_id;
        // The child's build waits for the block table: mid-materialisation, nothing written. Only
        // this test's database counts (the embedded server is shared with other test files), and
        // a build that gave up (its lock_timeout) fails the test by name instead of timing out.
        // Polled outside the lock's transaction: inside one, PostgreSQL serves pg_stat_activity
        // from a copy taken at its first read, so a build that began waiting later never shows.
        await waitFor(
          async () => {
            const r = await fx.cluster.query<{
              waiting: boolean;
              state: string | null;
              message: string | null;
            }>(
              `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                        AND wait_event_type = 'Lock' AND query LIKE 'WITH src AS MATERIALIZED%') AS waiting,
                      b.state, b.message
                 FROM (SELECT 1) one LEFT JOIN sync.snapshot_session_builds b ON b.snapshot_id = $1`,
              [sid],
            );
            const row = r.rows[0];
            if (row?.state === 'failed') throw new Error(`the child's build failed: ${row.message}`);
            return row?.waiting === true;
          },
          { timeoutMs: 30_000, what: "the child's build waiting on the block table" },
        );
        child.kill('SIGKILL');
        await child.wait();
        await lock.release();
        const chunk = await d.json('GET', `/sync/snapshot-sessions/${sid}?after_row_ordinal=0&max_rows=1000`);
        expect(chunk).toMatchObject({ status: 404, body: { error: 'snapshot_session_not_found' } });
        expect(await blockCount(sid)).toBe(0);
      } finally {
        await lock.release().catch(() => undefined);
      }
      const again = await d.json('POST', '/sync/snapshot-sessions');
      expect(again.status).toBe(200);
      expect(await allRows(d, again.body['snapshot_id'] as string)).toEqual(oracle.rows);
    } finally {
      child.kill('SIGKILL');
      await child.wait();
    }
  });
});
