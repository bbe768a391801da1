import { computeBundleHash } from '@x/oversync/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  Device,
  deleteRow,
  emptyScopeDevice,
  insertRow,
  randomUUID,
  sharedFixture,
  userRow,
} from '../fixture.js';

const fx = sharedFixture({ service: { limits: { maxRowsPerPushChunk: 50 } } });
beforeAll(fx.start);
afterAll(fx.close);

const device = (userId?: string) => emptyScopeDevice(fx.app, userId);
async function count(sql: string, params: unknown[] = []) {
  const r = await fx.cluster.query<{ n: string }>(sql, params);
  return Number(r.rows[0]!.n);
}
async function create(d: Device, sbid: number, planned: number) {
  return d.json('POST', '/sync/push-sessions', { source_bundle_id: sbid, planned_row_count: planned });
}
/** `d` uploads a chunk to session `id`, commits it and deletes it: what each request answered. */
async function chunkCommitDelete(d: Device, id: string) {
  const chunk = await d.json('POST', `/sync/push-sessions/${id}/chunks`, {
    start_row_ordinal: 0,
    rows: [userRow(randomUUID(), 'x')],
  });
  const commit = await d.json('POST', `/sync/push-sessions/${id}/commit`);
  const del = await d.json('DELETE', `/sync/push-sessions/${id}`);
  return { chunk, commit: commit.status, delete: del.status };
}

describe('create', () => {
  test('validates source_bundle_id and planned_row_count (400 push_session_invalid)', async () => {
    const d = await device();
    expect(await create(d, 0, 1)).toMatchObject({
      status: 400,
      body: { error: 'push_session_invalid', message: 'source_bundle_id must be > 0' },
    });
    expect(await create(d, 1, 0)).toMatchObject({
      status: 400,
      body: { error: 'push_session_invalid', message: 'planned_row_count must be > 0' },
    });
    expect((await d.req('POST', '/sync/push-sessions', '{nope')).statusCode).toBe(400);
  });

  test('uninitialized scope: 409 scope_uninitialized, with an initialization_id 410 initialization_expired', async () => {
    const d = new Device(fx.app, `fresh-${randomUUID()}`);
    expect(await create(d, 1, 1)).toMatchObject({ status: 409, body: { error: 'scope_uninitialized' } });
    const r = await d.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: randomUUID(),
    });
    expect(r).toMatchObject({ status: 410, body: { error: 'initialization_expired' } });
  });

  test('staging response, then already_committed replay of the accepted push', async () => {
    const d = await device();
    const staging = await create(d, 1, 1);
    expect(staging.status).toBe(200);
    expect(staging.body).toEqual({ push_id: expect.any(String), status: 'staging', planned_row_count: 1 });
    const commit = await d.push([userRow(randomUUID(), 'x')]);
    expect(commit.status).toBe(200);
    expect(commit.body).toEqual({
      bundle_seq: 1,
      source_id: d.sourceId,
      source_bundle_id: 1,
      row_count: 1,
      bundle_hash: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    const replay = await create(d, 1, 1);
    expect(replay).toEqual({ status: 200, body: { status: 'already_committed', ...commit.body } });
  });

  test('source sequencing: a gap is 409 source_sequence_out_of_order', async () => {
    const d = await device();
    const r = await create(d, 2, 1);
    expect(r).toMatchObject({
      status: 409,
      body: {
        error: 'source_sequence_out_of_order',
        message: `source ${d.sourceId} for user ${d.userId} expected next source_bundle_id 1, got 2`,
      },
    });
  });

  test('a second create for the same tuple replaces the staging session (old push_id 404)', async () => {
    const d = await device();
    const a = await create(d, 1, 2);
    const b = await create(d, 1, 2);
    expect(a.body['push_id']).not.toBe(b.body['push_id']);
    const chunk = await d.json('POST', `/sync/push-sessions/${a.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'a')],
    });
    expect(chunk).toMatchObject({ status: 404, body: { error: 'push_session_not_found' } });
  });

  test('a replaced session takes its staged chunks with it; the new one stages from row 0', async () => {
    const d = await device();
    const a = await create(d, 1, 2);
    const staged = await d.json('POST', `/sync/push-sessions/${a.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'a')],
    });
    expect(staged.status).toBe(200);
    const b = await create(d, 1, 2);
    expect(
      await count('SELECT count(*) AS n FROM sync.push_session_chunks WHERE push_id = $1', [
        a.body['push_id'],
      ]),
    ).toBe(0);
    expect(
      await count('SELECT count(*) AS n FROM sync.push_sessions WHERE push_id = $1', [a.body['push_id']]),
    ).toBe(0);
    const first = await d.json('POST', `/sync/push-sessions/${b.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'b'), userRow(randomUUID(), 'c')],
    });
    expect(first).toMatchObject({ status: 200, body: { next_expected_row_ordinal: 2 } });
    const committed = await d.json('POST', `/sync/push-sessions/${b.body['push_id']}/commit`);
    expect(committed).toMatchObject({ status: 200, body: { row_count: 2, source_bundle_id: 1 } });
  });
});

describe('chunks', () => {
  test('ordinals, limits and row validation', async () => {
    const d = await device();
    const { body } = await create(d, 1, 3);
    const url = `/sync/push-sessions/${body['push_id']}/chunks`;
    const rows = [userRow(randomUUID(), 'a'), userRow(randomUUID(), 'b'), userRow(randomUUID(), 'c')];
    const bad = async (chunk: unknown, error: string, message?: string) => {
      const r = await d.json('POST', url, chunk);
      expect(r.body['error'], JSON.stringify(r.body)).toBe(error);
      if (message) expect(r.body['message']).toContain(message);
      return r;
    };
    await bad({ start_row_ordinal: -1, rows }, 'push_chunk_invalid', 'start_row_ordinal must be >= 0');
    await bad({ start_row_ordinal: 0, rows: [] }, 'push_chunk_invalid', 'rows must not be empty');
    const many = Array.from({ length: 51 }, () => userRow(randomUUID(), 'm'));
    await bad(
      { start_row_ordinal: 0, rows: many },
      'push_chunk_invalid',
      'exceeds max_rows_per_push_chunk 50',
    );
    await bad(
      { start_row_ordinal: 1, rows: rows.slice(0, 1) },
      'push_chunk_out_of_order',
      'expected start_row_ordinal 0, got 1',
    );
    const ok = await d.json('POST', url, { start_row_ordinal: 0, rows: rows.slice(0, 2) });
    expect(ok).toEqual({ status: 200, body: { push_id: body['push_id'], next_expected_row_ordinal: 2 } });
    await bad(
      { start_row_ordinal: 2, rows: [...rows.slice(2), userRow(randomUUID(), 'd')] },
      'push_chunk_invalid',
      'exceeds planned_row_count',
    );
    const id = randomUUID();
    const cases: Array<[unknown, string]> = [
      [{ ...userRow(id, 'x'), table: 'nope' }, 'table business.nope is not registered'],
      [{ ...userRow(id, 'x'), schema: 'sync', table: 'user_state' }, 'is not registered'],
      [{ ...userRow(id.toUpperCase(), 'x') }, 'canonical dashed lowercase UUID'],
      [
        { ...userRow(id, 'x'), payload: { _sync_scope_id: 'other', name: 'x', email: 'e' } },
        'hidden scope column',
      ],
      [{ ...deleteRow('users', id, 1), payload: null }, 'must not include payload'],
      [
        { ...userRow(id, 'x'), payload: { id: randomUUID(), name: 'x', email: 'e' } },
        'must match request key',
      ],
      [{ ...userRow(id, 'x'), payload: { id, name: 'x', email: 'e', nope: 1 } }, 'unknown column nope'],
      [{ ...userRow(id, 'x'), op: 'UPSERT' }, 'invalid op'],
      [{ ...userRow(id, 'x'), key: { id: 5 } }, 'must contain string field id'],
      [{ ...userRow(id, 'x'), payload: [1] }, 'requires a JSON object payload'],
      [
        {
          schema: 'business',
          table: 'files',
          key: { id },
          op: 'INSERT',
          base_row_version: 0,
          payload: { name: 'f', data: 'not base64!' },
        },
        'standard base64',
      ],
    ];
    for (const [row, message] of cases)
      await bad({ start_row_ordinal: 2, rows: [row] }, 'push_chunk_invalid', message);
    await bad(
      { start_row_ordinal: 2, rows: [userRow(id, 'x'), userRow(id, 'y')] },
      'push_chunk_invalid',
      'duplicate target row in push request',
    );
    // Row validation runs before the session lookup: invalid rows on an unknown push id are 400, not 404.
    const r = await d.json('POST', `/sync/push-sessions/${randomUUID()}/chunks`, {
      start_row_ordinal: 0,
      rows: [cases[0]![0]],
    });
    expect(r.status).toBe(400);
    const missing = await d.json('POST', `/sync/push-sessions/${randomUUID()}/chunks`, {
      start_row_ordinal: 0,
      rows: rows.slice(0, 1),
    });
    expect(missing).toMatchObject({ status: 404, body: { error: 'push_session_not_found' } });
    const notUuid = await d.json('POST', '/sync/push-sessions/not-a-uuid/chunks', {
      start_row_ordinal: 0,
      rows: rows.slice(0, 1),
    });
    expect(notUuid.status).toBe(404);
    expect(
      await count(
        'SELECT coalesce(sum(row_count), 0) AS n FROM sync.push_session_chunks WHERE push_id = $1',
        [body['push_id']],
      ),
    ).toBe(2);
  });

  test('another user gets 403 on chunk, commit and delete', async () => {
    const a = await device();
    const b = await device();
    const { body } = await create(a, 1, 1);
    const id = body['push_id'] as string;
    expect(await chunkCommitDelete(b, id)).toMatchObject({
      chunk: { status: 403, body: { error: 'push_session_forbidden' } },
      commit: 403,
      delete: 403,
    });
  });

  test('TTL: an expired session answers 410 until a later create cleans it up, then 404', async () => {
    const d = await device();
    const { body } = await create(d, 1, 1);
    const id = body['push_id'] as string;
    await fx.cluster.query(
      "UPDATE sync.push_sessions SET expires_at = now() - interval '1 second' WHERE push_id = $1",
      [id],
    );
    expect(await chunkCommitDelete(d, id)).toMatchObject({
      chunk: { status: 410, body: { error: 'push_session_expired' } },
      commit: 410,
      delete: 410,
    });
    await create(await device(), 1, 1); // any user's create runs the global cleanup
    expect((await d.json('DELETE', `/sync/push-sessions/${id}`)).status).toBe(404);
  });
});

describe('commit and delete', () => {
  test('incomplete session is 400 push_commit_invalid; second commit 404; delete 204 then 404', async () => {
    const d = await device();
    const { body } = await create(d, 1, 2);
    const id = body['push_id'] as string;
    await d.json('POST', `/sync/push-sessions/${id}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'a')],
    });
    expect(await d.json('POST', `/sync/push-sessions/${id}/commit`)).toMatchObject({
      status: 400,
      body: {
        error: 'push_commit_invalid',
        message: 'staged row count 1 does not match planned_row_count 2',
      },
    });
    const del = await d.req('DELETE', `/sync/push-sessions/${id}`);
    expect(del.statusCode).toBe(204);
    expect(del.body).toBe('');
    expect((await d.json('DELETE', `/sync/push-sessions/${id}`)).body['error']).toBe(
      'push_session_not_found',
    );

    const ok = await d.push([userRow(randomUUID(), 'z')]);
    expect(ok.status).toBe(200);
    const again = await create(d, 2, 1);
    await d.json('POST', `/sync/push-sessions/${again.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'q')],
    });
    expect((await d.json('POST', `/sync/push-sessions/${again.body['push_id']}/commit`)).status).toBe(200);
    expect((await d.json('POST', `/sync/push-sessions/${again.body['push_id']}/commit`)).status).toBe(404);
  });

  test('409 source_sequence_changed when another writer advanced the source before commit', async () => {
    const d = await device();
    expect((await d.push([userRow(randomUUID(), 'a')])).status).toBe(200);
    const { body } = await create(d, 2, 1);
    const id = body['push_id'] as string;
    await d.json('POST', `/sync/push-sessions/${id}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'b')],
    });
    await fx.cluster.query(
      'UPDATE sync.source_state SET max_committed_source_bundle_id = 2 WHERE source_id = $1',
      [d.sourceId],
    );
    expect(await d.json('POST', `/sync/push-sessions/${id}/commit`)).toMatchObject({
      status: 409,
      body: { error: 'source_sequence_changed' },
    });
  });

  test('a commit the database refuses (deferred FK violation) is a 409 push_conflict and stores nothing', async () => {
    const d = await device();
    const post = randomUUID();
    const r = await d.push([
      insertRow('posts', { id: post, title: 't', content: 'c', author_id: randomUUID() }),
    ]);
    expect(r).toMatchObject({
      status: 409,
      body: { error: 'push_conflict', conflict: { reason: 'foreign_key' } },
    });
    const pulled = await d.pull(0);
    expect(pulled.body).toEqual({ stable_bundle_seq: 0, bundles: [], has_more: false });
    expect(await count('SELECT count(*) AS n FROM business.posts WHERE id = $1', [post])).toBe(0);
    expect(await count('SELECT count(*) AS n FROM sync.bundle_capture_stage')).toBe(0);
  });
});

describe('conflicts', () => {
  test('full push_conflict bodies for stale updates, existing inserts, missing rows and tombstones', async () => {
    const d = await device();
    const id = randomUUID();
    const c1 = await d.push([userRow(id, 'v1')]);
    expect(c1.status).toBe(200);
    const v1 = c1.body['bundle_seq'] as number;
    const c2 = await d.push([userRow(id, 'v2', v1, 'UPDATE')]);
    expect(c2.status).toBe(200);
    const v2 = c2.body['bundle_seq'] as number;

    const stale = await d.push([userRow(id, 'stale', v1, 'UPDATE')]);
    expect(stale.status).toBe(409);
    expect(stale.body).toEqual({
      error: 'push_conflict',
      message: `update conflict on business.users ${id}: expected version ${v2}, got ${v1}`,
      conflict: {
        schema: 'business',
        table: 'users',
        key: { id },
        op: 'UPDATE',
        base_row_version: v1,
        server_row_version: v2,
        server_row_deleted: false,
        reason: 'row_version',
        server_row: {
          id,
          name: 'v2',
          email: 'v2@example.com',
          created_at: expect.any(String),
          updated_at: expect.any(String),
        },
      },
    });
    d.sourceBundleId--; // the failed push did not consume the source bundle id... it was never committed
    d.sourceBundleId++;

    const dup = await d.push([userRow(id, 'dup')]);
    expect(dup.body['message']).toBe(
      `insert conflict on business.users ${id}: expected base_row_version ${v2}, got 0`,
    );
    const dup2 = await d.push([userRow(id, 'dup', v2)]);
    expect(dup2.body['message']).toBe(
      `insert conflict on business.users ${id}: row already exists at version ${v2}`,
    );

    const ghost = randomUUID();
    const missing = await d.push([userRow(ghost, 'g', 0, 'UPDATE')]);
    expect(missing.body).toMatchObject({
      error: 'push_conflict',
      message: `update conflict on business.users ${ghost}: row does not exist`,
      conflict: { server_row_version: 0, server_row_deleted: false, server_row: null },
    });

    const del = await d.push([deleteRow('users', id, v2)]);
    expect(del.status).toBe(200);
    const v3 = del.body['bundle_seq'] as number;
    const tomb = await d.push([deleteRow('users', id, v3)]);
    expect(tomb.body).toMatchObject({
      error: 'push_conflict',
      conflict: { op: 'DELETE', server_row_version: v3, server_row_deleted: true, server_row: null },
    });
    // Re-insert after delete must carry the tombstone version.
    const reinsert = await d.push([userRow(id, 'back', v3)]);
    expect(reinsert.status).toBe(200);
    const pulled = await d.pull(v3);
    expect(pulled.body['bundles']).toMatchObject([
      { rows: [{ op: 'INSERT', key: { id }, payload: { name: 'back' } }] },
    ]);
  });

  test('first conflict in staged order wins and nothing of the push is applied', async () => {
    const d = await device();
    const a = randomUUID();
    const b = randomUUID();
    const r = await d.push([
      userRow(a, 'ok'),
      userRow(b, 'x', 0, 'UPDATE'),
      userRow(randomUUID(), 'y', 5, 'UPDATE'),
    ]);
    expect(r.body['message']).toContain(b);
    expect(await count('SELECT count(*) AS n FROM business.users WHERE id = $1', [a])).toBe(0);
  });
});

describe('FK ordering, cascades and typed payloads', () => {
  test('children before parents across composite-key tables, a self-reference and a two-table cycle', async () => {
    const d = await device();
    const user = randomUUID();
    const post = randomUUID();
    const parentCat = randomUUID();
    const childCat = randomUUID();
    const team = randomUUID();
    const member = randomUUID();
    const rows = [
      insertRow('posts', { id: post, title: 't', content: 'c', author_id: user }),
      insertRow('categories', { id: childCat, name: 'child', parent_id: parentCat }),
      insertRow('team_members', { id: member, name: 'm', team_id: team }),
      insertRow('teams', { id: team, name: 'team', captain_member_id: member }),
      insertRow('categories', { id: parentCat, name: 'parent', parent_id: null }),
      userRow(user, 'author'),
    ];
    const r = await d.push(rows, { chunkSize: 2 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const seq = r.body['bundle_seq'] as number;
    const rowsRes = await d.json('GET', `/sync/committed-bundles/${seq}/rows`);
    expect((rowsRes.body['rows'] as Array<{ key: unknown }>).map((x) => x.key)).toEqual(
      rows.map((x) => x.key),
    );

    // Deleting the parent category cascades to the child: the bundle holds the captured effect too.
    const del = await d.push([deleteRow('categories', parentCat, seq)]);
    expect(del.status).toBe(200);
    expect(del.body['row_count']).toBe(2);
    const pulled = await d.pull(seq);
    const bundle = (
      pulled.body['bundles'] as Array<{ rows: Array<{ op: string; key: { id: string } }> }>
    )[0]!;
    expect(bundle.rows.map((x) => [x.op, x.key.id]).sort()).toEqual(
      [
        ['DELETE', parentCat],
        ['DELETE', childCat],
      ].sort(),
    );
    expect(d.sourceBundleId).toBe(2);
    const discovered = fx.service.discoveredSchema!;
    expect(discovered.cycles.size).toBe(1);
    expect([...discovered.cycles.values()][0]).toEqual(['business.team_members', 'business.teams']);
    const order = discovered.tableOrder;
    expect(order.indexOf('business.users')).toBeLessThan(order.indexOf('business.posts'));
    expect(order.indexOf('business.files')).toBeLessThan(order.indexOf('business.file_reviews'));
  });

  test('bytea, bigint, float and timestamptz payloads round-trip; pulled rows reproduce bundle_hash', async () => {
    const d = await device();
    const id = randomUUID();
    const file = randomUUID();
    const data = Buffer.from([0, 1, 2, 250, 255]).toString('base64');
    const r = await d.push([
      {
        schema: 'business',
        table: 'typed_rows',
        key: { id },
        op: 'INSERT',
        base_row_version: 0,
        payload: {
          id,
          name: 'A & <B> \u2028',
          note: null,
          count_value: 9007199254740991,
          enabled_flag: 1,
          rating: 4.25,
          data,
          created_at: '2026-03-24T10:42:11-08:00',
        },
      },
      insertRow('files', { id: file, name: 'f', data: '' }),
    ]);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const pulled = await d.pull(0);
    const bundle = (
      pulled.body['bundles'] as Array<{ bundle_hash: string; rows: Array<Record<string, unknown>> }>
    )[0]!;
    expect(bundle.rows[0]!['payload']).toEqual({
      id,
      name: 'A & <B> \u2028',
      note: null,
      count_value: 9007199254740991,
      enabled_flag: 1,
      rating: 4.25,
      data,
      created_at: '2026-03-24T18:42:11+00:00',
    });
    expect(bundle.rows[1]!['payload']).toMatchObject({ data: '' });
    expect(computeBundleHash(bundle.rows as never).hex).toBe(bundle.bundle_hash);
    expect(bundle.bundle_hash).toBe(r.body['bundle_hash']);
    const stored = await fx.cluster.query<{ data: Buffer }>(
      'SELECT data FROM business.typed_rows WHERE id = $1',
      [id],
    );
    expect(stored.rows[0]!.data.equals(Buffer.from([0, 1, 2, 250, 255]))).toBe(true);
    const log = await fx.cluster.query<{ byte_count: string }>(
      "SELECT byte_count::text FROM sync.bundle_log WHERE bundle_hash = decode($1, 'hex')",
      [bundle.bundle_hash],
    );
    expect(Number(log.rows[0]!.byte_count)).toBe(computeBundleHash(bundle.rows as never).byteCount);
  });
});

describe('concurrency and isolation', () => {
  test('concurrent pushes of one user serialise into a gapless bundle sequence', async () => {
    const userId = `conc-${randomUUID()}`;
    const devices = await Promise.all(
      Array.from({ length: 4 }, async (_, i) => {
        const dv = new Device(fx.app, userId, `dev-${i}`);
        await dv.connect(false);
        return dv;
      }),
    );
    const results = await Promise.all(
      devices.map(async (dv) => {
        const out = [];
        for (let k = 0; k < 3; k++) {
          out.push(
            await dv.push(
              Array.from({ length: 20 }, (_, j) => userRow(randomUUID(), `d${k}-${j}`)),
              { chunkSize: 7 },
            ),
          );
        }
        return out;
      }),
    );
    const seqs = results.flat().map((r) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body['bundle_seq'] as number;
    });
    expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    const pulled = await devices[0]!.pull(0);
    const bundles = pulled.body['bundles'] as Array<{ rows: unknown[]; source_id: string }>;
    expect(bundles).toHaveLength(12);
    for (const b of bundles) expect(b.rows).toHaveLength(20);
  });

  test('two users are isolated: same keys, pulls, committed rows and conflicts', async () => {
    const a = await device();
    const b = await device();
    const id = randomUUID();
    const ra = await a.push([userRow(id, 'alice')]);
    expect(ra.status).toBe(200);
    // b's update of a's key sees no row (conflict), never touching a's row
    const rb = await b.push([userRow(id, 'mallory', ra.body['bundle_seq'] as number, 'UPDATE')]);
    expect(rb.body).toMatchObject({
      error: 'push_conflict',
      conflict: { server_row: null, server_row_version: 0 },
    });
    // b may insert the same key in its own scope
    expect((await b.push([userRow(id, 'bob')])).status).toBe(200);
    const pa = await a.pull(0);
    const pb = await b.pull(0);
    expect(
      (pa.body['bundles'] as Array<{ rows: Array<{ payload: { name: string } }> }>)[0]!.rows[0]!.payload.name,
    ).toBe('alice');
    expect(
      (pb.body['bundles'] as Array<{ rows: Array<{ payload: { name: string } }> }>)[0]!.rows[0]!.payload.name,
    ).toBe('bob');
    const stored = await fx.cluster.query<{ _sync_scope_id: string; name: string }>(
      'SELECT _sync_scope_id, name FROM business.users WHERE id = $1 ORDER BY name',
      [id],
    );
    expect(stored.rows).toEqual([
      { _sync_scope_id: a.userId, name: 'alice' },
      { _sync_scope_id: b.userId, name: 'bob' },
    ]);
  });

  test('writes to registered tables outside a sync bundle are rejected and counted', async () => {
    const before = (await fx.service.status()).rejected_registered_write_count;
    await expect(
      fx.cluster.query(
        "INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ('x', $1, 'n', 'e')",
        [randomUUID()],
      ),
    ).rejects.toThrow(/requires oversync sync bundle context/);
    await expect(fx.cluster.query('DELETE FROM business.users')).rejects.toThrow(/sync bundle context/);
    expect((await fx.service.status()).rejected_registered_write_count).toBe(before + 2);
  });
});
