import { createSyncService } from '@x/oversync/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  countOf,
  createFixture,
  Device,
  deleteRow,
  insertBypassingCapture,
  insertRow,
  randomUUID,
  sharedFixture,
  userRow,
} from '../fixture.js';

const fx = sharedFixture({ service: { limits: { maxRowsPerSnapshotSession: 6 } } });
beforeAll(fx.start);
afterAll(fx.close);

async function device(source?: string) {
  const d = new Device(fx.app, `s-${randomUUID()}`, source);
  await d.connect(false);
  return d;
}
type Chunk = {
  snapshot_id: string;
  snapshot_bundle_seq: number;
  rows: Array<{
    schema: string;
    table: string;
    key: { id: string };
    row_version: number;
    payload: Record<string, unknown>;
  }>;
  next_row_ordinal: number;
  has_more: boolean;
};
const RFC3339_NANO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*[1-9])?Z$/;

describe('snapshot sessions', () => {
  test('a frozen, chunked, ordered snapshot that stays consistent while writes continue', async () => {
    const d = await device();
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const file = randomUUID();
    const c1 = await d.push([
      ...ids.map((id, i) => userRow(id, `u${i}`)),
      insertRow('files', { id: file, name: 'f', data: 'AAEC+v8=' }),
    ]);
    const v1 = c1.body['bundle_seq'] as number;
    const c2 = await d.push([userRow(ids[0]!, 'u0-v2', v1, 'UPDATE')]);
    const v2 = c2.body['bundle_seq'] as number;

    const created = await d.json('POST', '/sync/snapshot-sessions');
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body).toEqual({
      snapshot_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      snapshot_bundle_seq: v2,
      row_count: 4,
      byte_count: expect.any(Number),
      expires_at: expect.stringMatching(RFC3339_NANO_UTC),
    });
    const sid = created.body['snapshot_id'] as string;

    // writes continue after the snapshot was taken
    await d.push([deleteRow('users', ids[1]!, v1), userRow(randomUUID(), 'new')]);

    const rows: Chunk['rows'] = [];
    let after = 0;
    for (;;) {
      const page = await d.json<Chunk>(
        'GET',
        `/sync/snapshot-sessions/${sid}?after_row_ordinal=${after}&max_rows=3`,
      );
      expect(page.status).toBe(200);
      expect(page.body.snapshot_bundle_seq).toBe(v2);
      expect(page.body.next_row_ordinal).toBe(after + page.body.rows.length);
      rows.push(...page.body.rows);
      after = page.body.next_row_ordinal;
      if (!page.body.has_more) break;
    }
    expect(rows).toHaveLength(4);
    // alphabetical table order (files before users), key bytes order within a table
    expect(rows[0]).toEqual({
      schema: 'business',
      table: 'files',
      key: { id: file },
      row_version: v1,
      payload: { id: file, name: 'f', data: 'AAEC+v8=' },
    });
    const users = rows.slice(1);
    expect(users.map((r) => r.key.id)).toEqual([...ids].sort());
    const byId = new Map(users.map((r) => [r.key.id, r]));
    expect(byId.get(ids[0]!)).toMatchObject({ row_version: v2, payload: { name: 'u0-v2' } });
    expect(byId.get(ids[1]!)).toMatchObject({ row_version: v1, payload: { name: 'u1' } });
    for (const r of users) expect(r.payload).not.toHaveProperty('_sync_scope_id');

    const del = await d.req('DELETE', `/sync/snapshot-sessions/${sid}`);
    expect(del.statusCode).toBe(204);
    expect((await d.json('GET', `/sync/snapshot-sessions/${sid}`)).body['error']).toBe(
      'snapshot_session_not_found',
    );
  });

  test('an empty scope snapshots at seq 0 without byte_count; limits are a clean 400', async () => {
    const d = await device();
    const empty = await d.json('POST', '/sync/snapshot-sessions', '');
    expect(empty.body).toEqual({
      snapshot_id: expect.any(String),
      snapshot_bundle_seq: 0,
      row_count: 0,
      expires_at: expect.any(String),
    });
    await d.push(Array.from({ length: 7 }, (_, i) => userRow(randomUUID(), `n${i}`)));
    const tooBig = await d.json('POST', '/sync/snapshot-sessions');
    expect(tooBig).toMatchObject({
      status: 400,
      body: {
        error: 'snapshot_session_invalid',
        message: 'snapshot row count exceeds max_rows_per_snapshot_session 6',
      },
    });
  });

  test('session rows go with their header: on DELETE, on the expiry sweep and with the user', async () => {
    const d = await device();
    expect((await d.push([userRow(randomUUID(), 'a'), userRow(randomUUID(), 'b')])).status).toBe(200);
    const rowsOf = async (table: string, col: string, id: string) =>
      countOf(fx, `SELECT count(*)::text AS n FROM sync.${table} WHERE ${col} = $1`, [id]);
    const snapshotRows = async (id: string) =>
      countOf(
        fx,
        'SELECT coalesce(sum(row_count), 0)::text AS n FROM sync.snapshot_session_blocks WHERE snapshot_id = $1',
        [id],
      );
    const snapshot = async () =>
      (await d.json('POST', '/sync/snapshot-sessions')).body['snapshot_id'] as string;
    const s1 = await snapshot();
    expect(await snapshotRows(s1)).toBe(2);
    expect((await d.req('DELETE', `/sync/snapshot-sessions/${s1}`)).statusCode).toBe(204);
    expect(await snapshotRows(s1)).toBe(0);

    const s2 = await snapshot();
    await fx.cluster.query(
      "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 second' WHERE snapshot_id = $1",
      [s2],
    );
    const s3 = await snapshot(); // the create sweeps expired sessions
    expect(await snapshotRows(s2)).toBe(0);
    expect(await snapshotRows(s3)).toBe(2);

    const push = await d.json('POST', '/sync/push-sessions', {
      source_bundle_id: d.sourceBundleId + 1,
      planned_row_count: 2,
    });
    const pushId = push.body['push_id'] as string;
    const chunk = await d.json('POST', `/sync/push-sessions/${pushId}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'c')],
    });
    expect(chunk.status, JSON.stringify(chunk.body)).toBe(200);
    expect(await rowsOf('push_session_chunks', 'push_id', pushId)).toBe(1);
    await fx.cluster.runTx(async (tx) => {
      await tx.query('DELETE FROM sync.user_state WHERE user_id = $1', [d.userId]);
    });
    expect(await snapshotRows(s3)).toBe(0);
    expect(await rowsOf('push_session_chunks', 'push_id', pushId)).toBe(0);
  });

  test('a business row without live row_state, or the reverse, fails the create and stores nothing', async () => {
    const d = await device();
    const kept = randomUUID();
    expect((await d.push([userRow(kept, 'kept')])).status).toBe(200);
    const actor = { userId: d.userId, sourceId: d.sourceId };
    const blocks = async () => countOf(fx, 'SELECT count(*)::text AS n FROM sync.snapshot_session_blocks');
    const before = await blocks();
    // a write that bypassed capture: a business row with no row_state entry
    const stray = randomUUID();
    await insertBypassingCapture(fx, d.userId, stray);
    const hex = (id: string) => id.replaceAll('-', '');
    await expect(fx.service.createSnapshotSession(actor)).rejects.toMatchObject({
      code: 'OVERSYNC_INTERNAL',
      message: expect.stringContaining(
        `row ${hex(stray)} of business.users exists only in the business table`,
      ),
    });
    // and a live row_state entry whose business row was deleted behind capture's back
    await fx.cluster.runTx(async (tx) => {
      await tx.query('SET LOCAL session_replication_role = replica');
      await tx.query('DELETE FROM business.users WHERE _sync_scope_id = $1', [d.userId]);
    });
    await expect(fx.service.createSnapshotSession(actor)).rejects.toMatchObject({
      code: 'OVERSYNC_INTERNAL',
      message: expect.stringContaining(`row ${hex(kept)} of business.users exists only in row_state (live)`),
    });
    expect(await blocks()).toBe(before);
    const sessions = await fx.cluster.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM sync.snapshot_sessions s JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1',
      [d.userId],
    );
    expect(sessions.rows[0]!.n).toBe('0');
  });

  test('errors: validation 400, unknown/non-UUID 404, other user 403, expired 410, scope 409', async () => {
    const d = await device();
    const created = await d.json('POST', '/sync/snapshot-sessions', {});
    const sid = created.body['snapshot_id'] as string;
    for (const q of ['after_row_ordinal=-1', 'after_row_ordinal=x', 'max_rows=0', 'max_rows=%201']) {
      expect(await d.json('GET', `/sync/snapshot-sessions/${sid}?${q}`), q).toMatchObject({
        status: 400,
        body: { error: 'snapshot_chunk_invalid' },
      });
    }
    expect((await d.json('GET', `/sync/snapshot-sessions/${randomUUID()}`)).status).toBe(404);
    expect((await d.json('GET', '/sync/snapshot-sessions/not-a-uuid')).status).toBe(404);
    expect((await d.json('DELETE', '/sync/snapshot-sessions/not-a-uuid')).status).toBe(404);
    const other = await device();
    expect((await other.json('GET', `/sync/snapshot-sessions/${sid}`)).body['error']).toBe(
      'snapshot_session_forbidden',
    );
    expect((await other.json('DELETE', `/sync/snapshot-sessions/${sid}`)).status).toBe(403);
    await fx.cluster.query(
      "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 second' WHERE snapshot_id = $1",
      [sid],
    );
    expect((await d.json('GET', `/sync/snapshot-sessions/${sid}`)).body['error']).toBe(
      'snapshot_session_expired',
    );
    expect((await d.req('DELETE', `/sync/snapshot-sessions/${sid}`)).statusCode).toBe(204); // no expiry check on delete
    const fresh = new Device(fx.app, `nobody-${randomUUID()}`);
    expect((await fresh.json('POST', '/sync/snapshot-sessions')).body['error']).toBe('scope_uninitialized');
    for (const body of [
      '{',
      '{"unknown":1}',
      '{"source_replacement":{"previous_source_id":"a","x":1}}',
      '[]',
    ]) {
      expect(await d.json('POST', '/sync/snapshot-sessions', body), body).toMatchObject({
        status: 400,
        body: { error: 'snapshot_session_invalid', message: 'Failed to parse snapshot session request' },
      });
    }
  });
});

describe('source replacement', () => {
  test('rotating to a new source retires the old one, whose later calls get source_retired', async () => {
    const old = await device('old-src');
    const userId = old.userId;
    await old.push([userRow(randomUUID(), 'a')]);
    // a staged session of the old source, committed after the rotation
    const staged = await old.json('POST', '/sync/push-sessions', {
      source_bundle_id: 2,
      planned_row_count: 1,
    });
    await old.json('POST', `/sync/push-sessions/${staged.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'b')],
    });

    const bad = async (rep: Record<string, string>, status: number, error: string, message?: string) => {
      const r = await old.json('POST', '/sync/snapshot-sessions', { source_replacement: rep });
      expect(r, JSON.stringify(rep)).toMatchObject({ status, body: { error } });
      if (message) expect(r.body['message']).toBe(message);
    };
    await bad(
      { previous_source_id: 'someone-else', new_source_id: 'n', reason: 'history_pruned' },
      400,
      'snapshot_session_invalid',
      'previous_source_id must match authenticated source_id',
    );
    await bad(
      { previous_source_id: 'old-src', new_source_id: '', reason: 'history_pruned' },
      400,
      'snapshot_session_invalid',
      'new_source_id is required for source replacement',
    );
    await bad(
      { previous_source_id: 'old-src', new_source_id: 'old-src', reason: 'history_pruned' },
      400,
      'snapshot_session_invalid',
    );
    await bad(
      { previous_source_id: 'old-src', new_source_id: 'n', reason: 'because' },
      400,
      'snapshot_session_invalid',
      'source replacement reason is unsupported',
    );

    const rep = {
      previous_source_id: 'old-src',
      new_source_id: 'new-src',
      reason: 'source_sequence_out_of_order',
    };
    const rotated = await old.json('POST', '/sync/snapshot-sessions', { source_replacement: rep });
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    expect(rotated.body['row_count']).toBe(1);
    // an idempotent retry of the same rotation succeeds
    expect((await old.json('POST', '/sync/snapshot-sessions', { source_replacement: rep })).status).toBe(200);

    const retiredBody = {
      error: 'source_retired',
      message: `source old-src for user ${userId} was retired and replaced by new-src`,
      source_id: 'old-src',
      replaced_by_source_id: 'new-src',
    };
    expect(
      await old.json('POST', '/sync/push-sessions', { source_bundle_id: 2, planned_row_count: 1 }),
    ).toEqual({ status: 409, body: retiredBody });
    expect(await old.json('POST', `/sync/push-sessions/${staged.body['push_id']}/commit`)).toEqual({
      status: 409,
      body: retiredBody,
    });
    await bad(
      { previous_source_id: 'old-src', new_source_id: 'third', reason: 'source_retired' },
      409,
      'source_retired',
    );
    // pulls and keep-source snapshots of the retired source still work
    expect((await old.pull(0)).status).toBe(200);
    expect((await old.json('POST', '/sync/snapshot-sessions')).status).toBe(200);

    const fresh = new Device(fx.app, userId, 'new-src');
    expect((await fresh.connect(false)).body['resolution']).toBe('remote_authoritative');
    expect((await fresh.push([userRow(randomUUID(), 'c')])).status).toBe(200);
    // rotating onto a source that is already known is refused
    const other = new Device(fx.app, userId, 'another');
    await other.push([userRow(randomUUID(), 'd')]);
    const r = await other.json('POST', '/sync/snapshot-sessions', {
      source_replacement: {
        previous_source_id: 'another',
        new_source_id: 'new-src',
        reason: 'history_pruned',
      },
    });
    expect(r).toMatchObject({
      status: 409,
      body: {
        error: 'source_replacement_invalid',
        message: `replacement source new-src is already known for user ${userId}`,
      },
    });
  });
});

/** A fixture whose registered tables are users (uuid keys) and tags (text keys). */
function usersAndTagsFixture() {
  return createFixture({
    schemaSql: `CREATE SCHEMA business;
      CREATE TABLE business.users (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL,
        email TEXT NOT NULL, PRIMARY KEY (_sync_scope_id, id));
      CREATE TABLE business.tags (_sync_scope_id TEXT NOT NULL, id TEXT NOT NULL, label TEXT,
        PRIMARY KEY (_sync_scope_id, id));`,
    service: {
      registeredTables: ['users', 'tags'].map((table) => ({
        schema: 'business',
        table,
        syncKeyColumns: ['id'],
      })),
    },
  });
}

describe('snapshot pages', () => {
  test('text keys needing JSON escapes and uuid keys come back exactly, across tables and pages', async () => {
    const tfx = await usersAndTagsFixture();
    try {
      const d = new Device(tfx.app, `p-${randomUUID()}`);
      await d.connect(false);
      const user = randomUUID();
      const tagKeys = ['a "quoted" \\ key', 'ü <&> \u2028 tab\t', 'plain'];
      const pushed = await d.push([
        userRow(user, 'u'),
        ...tagKeys.map((id, i) => ({
          schema: 'business',
          table: 'tags',
          key: { id },
          op: 'INSERT' as const,
          base_row_version: 0,
          payload: { id, label: i === 1 ? null : `l${i}` },
        })),
      ]);
      expect(pushed.status, JSON.stringify(pushed.body)).toBe(200);
      const seq = pushed.body['bundle_seq'] as number;
      const sid = (await d.json('POST', '/sync/snapshot-sessions')).body['snapshot_id'] as string;
      const rows: Chunk['rows'] = [];
      for (let after = 0; ; ) {
        const page = await d.json<Chunk>(
          'GET',
          `/sync/snapshot-sessions/${sid}?after_row_ordinal=${after}&max_rows=3`,
        );
        expect(page.status).toBe(200);
        rows.push(...page.body.rows);
        after = page.body.next_row_ordinal;
        if (!page.body.has_more) break;
      }
      const byKey = new Map(rows.map((r) => [`${r.table}:${r.key.id}`, r]));
      expect(rows).toHaveLength(4);
      expect(byKey.get(`users:${user}`)).toEqual({
        schema: 'business',
        table: 'users',
        key: { id: user },
        row_version: seq,
        payload: { id: user, name: 'u', email: 'u@example.com' },
      });
      tagKeys.forEach((id, i) => {
        expect(byKey.get(`tags:${id}`)).toEqual({
          schema: 'business',
          table: 'tags',
          key: { id },
          row_version: seq,
          payload: { id, label: i === 1 ? null : `l${i}` },
        });
      });
    } finally {
      await tfx.close();
    }
  });

  test('pages of any size across blocks and a table boundary return every row once, in key order', async () => {
    // 600 users and 300 tags: three blocks of up to 256 rows per table, so pages start and end
    // inside blocks, on block edges and across the users→tags boundary.
    const tfx = await usersAndTagsFixture();
    try {
      const userId = `p-${randomUUID()}`;
      const d = new Device(tfx.app, userId);
      await d.connect(false);
      await tfx.service.scopeManager().execWrite(userId, { writerId: 'seeder' }, async (tx) => {
        await tx.query(
          `INSERT INTO business.users (id, name, email)
           SELECT gen_random_uuid(), 'u' || i, 'u' || i || '@example.com' FROM generate_series(1, 600) AS i`,
        );
        await tx.query(
          `INSERT INTO business.tags (id, label) SELECT 'tag-' || lpad(i::text, 4, '0'), 'l' || i FROM generate_series(1, 300) AS i`,
        );
      });
      const expected = (
        await tfx.cluster.query<{ t: string; id: string }>(
          `SELECT 'users' AS t, id::text AS id FROM business.users WHERE _sync_scope_id = $1
           UNION ALL SELECT 'tags', id FROM business.tags WHERE _sync_scope_id = $1`,
          [userId],
        )
      ).rows;
      const users = expected.filter((r) => r.t === 'users').map((r) => r.id);
      const tags = expected.filter((r) => r.t === 'tags').map((r) => r.id);
      // tables in table_id order; uuid keys order by their bytes, i.e. by their lower-case hex text
      const order = (
        await tfx.cluster.query<{ table_name: string }>(
          'SELECT table_name FROM sync.table_catalog ORDER BY table_id',
        )
      ).rows.map((r) => r.table_name);
      const keys: Record<string, string[]> = { users: users.sort(), tags: tags.sort() };
      const want = order.flatMap((t) => keys[t]!.map((id) => `${t}:${id}`));
      for (const size of [1, 97, 256, 257, 1000]) {
        const sid = (await d.json('POST', '/sync/snapshot-sessions')).body['snapshot_id'] as string;
        const got: string[] = [];
        for (let after = 0; ; ) {
          const page = await d.json<Chunk>(
            'GET',
            `/sync/snapshot-sessions/${sid}?after_row_ordinal=${after}&max_rows=${size}`,
          );
          expect(page.status).toBe(200);
          expect(page.body.rows.length).toBe(Math.min(size, 900 - after));
          expect(page.body.next_row_ordinal).toBe(after + page.body.rows.length);
          for (const r of page.body.rows) got.push(`${r.table}:${r.key.id}`);
          after = page.body.next_row_ordinal;
          if (!page.body.has_more) break;
        }
        expect(got, `max_rows=${size}`).toEqual(want);
        // a page past the end is empty and final
        const past = await d.json<Chunk>(
          'GET',
          `/sync/snapshot-sessions/${sid}?after_row_ordinal=900&max_rows=5`,
        );
        expect(past.body).toMatchObject({ rows: [], next_row_ordinal: 900, has_more: false });
      }
    } finally {
      await tfx.close();
    }
  });

  test('an install from before the block layout gets it at bootstrap; its old sessions answer 404', async () => {
    const tfx = await usersAndTagsFixture();
    try {
      const d = new Device(tfx.app, `o-${randomUUID()}`);
      await d.connect(false);
      expect((await d.push([userRow(randomUUID(), 'a')])).status).toBe(200);
      // the layout as an older server left it: no block table, one session materialised into the old rows table
      await tfx.cluster.exec('DROP TABLE sync.snapshot_session_blocks');
      const old = randomUUID();
      await tfx.cluster.query(
        `INSERT INTO sync.snapshot_sessions (snapshot_id, user_pk, snapshot_bundle_seq, row_count, expires_at)
         SELECT $1, user_pk, 1, 1, now() + interval '1 hour' FROM sync.user_state WHERE user_id = $2`,
        [old, d.userId],
      );
      const again = createSyncService({
        db: tfx.cluster,
        registeredTables: ['users', 'tags'].map((table) => ({
          schema: 'business',
          table,
          syncKeyColumns: ['id'],
        })),
      });
      await again.bootstrap();
      await again.close();
      expect(
        (await tfx.cluster.query(`SELECT to_regclass('sync.snapshot_session_blocks')::text AS t`)).rows[0],
      ).toEqual({ t: 'sync.snapshot_session_blocks' });
      const stale = await d.json('GET', `/sync/snapshot-sessions/${old}?after_row_ordinal=0&max_rows=10`);
      expect(stale).toMatchObject({ status: 404, body: { error: 'snapshot_session_not_found' } });
      const sid = (await d.json('POST', '/sync/snapshot-sessions')).body['snapshot_id'] as string;
      const page = await d.json<Chunk>(
        'GET',
        `/sync/snapshot-sessions/${sid}?after_row_ordinal=0&max_rows=10`,
      );
      expect(page.status).toBe(200);
      expect(page.body.rows.map((r) => r.payload['name'])).toEqual(['a']);
    } finally {
      await tfx.close();
    }
  });
});
