/**
 * Issue #14 (server side): a push the database refuses because of its data is answered per row,
 * never with a 5xx: `409 push_conflict` (with `reason`, `constraint`, `column`, `references`) at
 * commit, `400 push_row_invalid` at chunk upload for a value its column type refuses. Each case
 * checks that nothing was stored, no bundle_seq was used, the session is left for the client,
 * and a corrected push for the same source_bundle_id commits.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  BUSINESS_SCHEMA_SQL,
  Device,
  deleteRow,
  emptyScopeDevice,
  insertRow,
  randomUUID,
  sharedFixture,
  userRow,
} from '../fixture.js';

// The business schema plus constraints of every class: a UNIQUE, a CHECK, a RESTRICT foreign key.
const SCHEMA_SQL = `${BUSINESS_SCHEMA_SQL}
ALTER TABLE business.users ADD CONSTRAINT users_email_key UNIQUE (_sync_scope_id, email);
ALTER TABLE business.typed_rows ADD CONSTRAINT typed_rows_enabled_flag_chk CHECK (enabled_flag IN (0, 1));
ALTER TABLE business.posts DROP CONSTRAINT posts_author_id_fkey;
ALTER TABLE business.posts ADD CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
  REFERENCES business.users (_sync_scope_id, id) ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
`;

const fx = sharedFixture({ schemaSql: SCHEMA_SQL });
beforeAll(fx.start);
afterAll(fx.close);

const device = (userId?: string) => emptyScopeDevice(fx.app, userId);

/** What a refused push must leave unchanged: the user's counters, bundles, business rows. */
async function snapshotOf(d: Device) {
  const r = await fx.cluster.query<Record<string, string>>(
    `SELECT (SELECT next_bundle_seq::text FROM sync.user_state WHERE user_id = $1) AS next_seq,
            (SELECT count(*)::text FROM sync.bundle_log b JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1) AS bundles,
            (SELECT count(*)::text FROM sync.row_state s JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1) AS states,
            (SELECT coalesce(max(max_committed_source_bundle_id), 0)::text FROM sync.source_state s
               JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1) AS source_max,
            (SELECT count(*)::text FROM sync.bundle_capture_stage) AS staged,
            ((SELECT count(*) FROM business.users WHERE _sync_scope_id = $1)
             + (SELECT count(*) FROM business.posts WHERE _sync_scope_id = $1)
             + (SELECT count(*) FROM business.teams WHERE _sync_scope_id = $1)
             + (SELECT count(*) FROM business.team_members WHERE _sync_scope_id = $1)
             + (SELECT count(*) FROM business.typed_rows WHERE _sync_scope_id = $1))::text AS business`,
    [d.userId],
  );
  return r.rows[0]!;
}

async function sessionsOf(d: Device) {
  const r = await fx.cluster.query<{ n: string }>(
    'SELECT count(*)::text AS n FROM sync.push_sessions WHERE source_id = $1',
    [d.sourceId],
  );
  return Number(r.rows[0]!.n);
}

/** Pushes `rows` expecting a refusal; checks that nothing changed and the session was left. */
async function refused(d: Device, rows: unknown[], opts: { chunkSize?: number } = {}) {
  const before = await snapshotOf(d);
  const sbid = d.sourceBundleId;
  const r = await d.push(rows, opts);
  expect(d.sourceBundleId).toBe(sbid);
  expect(await snapshotOf(d)).toEqual(before);
  expect(await sessionsOf(d)).toBe(1);
  return r as { status: number; body: Record<string, unknown> };
}

/** A corrected push for the same source_bundle_id commits (a new session replaces the refused one). */
async function commits(d: Device, rows: unknown[]) {
  const sbid = d.sourceBundleId + 1;
  const r = await d.push(rows);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body['source_bundle_id']).toBe(sbid);
  expect(await sessionsOf(d)).toBe(0);
}

const post = (id: string, authorId: string | null) =>
  insertRow('posts', { id, title: 't', content: 'c', author_id: authorId });

describe('409 push_conflict for rows the database refuses at commit', () => {
  test('child of a parent another device deleted: foreign_key with references (deleted)', async () => {
    const x = await device();
    const y = new Device(fx.app, x.userId);
    const list = randomUUID();
    expect((await x.push([userRow(list, 'parent')])).status).toBe(200);
    const del = await x.push([deleteRow('users', list, 1)]);
    expect(del.status).toBe(200);
    const deletedAt = del.body['bundle_seq'] as number;

    const item = randomUUID();
    const r = await refused(y, [post(item, list)]);
    expect(r.status).toBe(409);
    expect(r.body).toEqual({
      error: 'push_conflict',
      message: expect.stringContaining(`foreign key conflict on business.posts ${item}`),
      conflict: {
        schema: 'business',
        table: 'posts',
        key: { id: item },
        op: 'INSERT',
        base_row_version: 0,
        server_row_version: 0,
        server_row_deleted: false,
        server_row: null,
        reason: 'foreign_key',
        constraint: 'posts_author_id_fkey',
        references: {
          schema: 'business',
          table: 'users',
          key: { id: list },
          row_version: deletedAt,
          deleted: true,
        },
      },
    });
    await commits(y, [post(item, null)]);
  });

  test('parent the server has never had: references with row_version 0', async () => {
    const d = await device();
    const ghost = randomUUID();
    const item = randomUUID();
    const r = await refused(d, [userRow(randomUUID(), 'fine'), post(item, ghost)]);
    expect(r).toMatchObject({
      status: 409,
      body: {
        error: 'push_conflict',
        conflict: {
          key: { id: item },
          reason: 'foreign_key',
          references: { table: 'users', key: { id: ghost }, row_version: 0, deleted: false },
        },
      },
    });
    // The same bundle with the parent in it (after the child: constraints are deferred) commits.
    await commits(d, [post(item, ghost), userRow(ghost, 'ghost')]);
  });

  test('the refused row is found among many (batched statements, second chunk)', async () => {
    const d = await device();
    const rows: unknown[] = [];
    for (let i = 0; i < 120; i++) rows.push(userRow(randomUUID(), `bulk${i}`));
    const bad = randomUUID();
    rows.splice(77, 0, post(bad, randomUUID()));
    for (let i = 0; i < 30; i++) rows.push(post(randomUUID(), null));
    const r = await refused(d, rows, { chunkSize: 50 });
    expect(r).toMatchObject({ status: 409, body: { conflict: { key: { id: bad }, reason: 'foreign_key' } } });
    rows.splice(77, 1);
    await commits(d, rows);
  });

  test('DELETE of a parent whose RESTRICT children remain: foreign_key on the deleted row, with its server row', async () => {
    const d = await device();
    const author = randomUUID();
    expect((await d.push([userRow(author, 'author'), post(randomUUID(), author)])).status).toBe(200);
    const r = await refused(d, [deleteRow('users', author, 1)]);
    expect(r).toMatchObject({
      status: 409,
      body: {
        error: 'push_conflict',
        conflict: {
          table: 'users',
          key: { id: author },
          op: 'DELETE',
          base_row_version: 1,
          server_row_version: 1,
          server_row_deleted: false,
          server_row: { id: author, name: 'author', email: 'author@example.com' },
          reason: 'foreign_key',
          constraint: 'posts_author_id_fkey',
        },
      },
    });
    expect((r.body['conflict'] as Record<string, unknown>)['references']).toBeUndefined();
    await commits(d, [userRow(author, 'renamed', 1, 'UPDATE')]);
  });

  test('DELETE of a parent whose NO ACTION children remain (deferred check)', async () => {
    const d = await device();
    const team = randomUUID();
    const captain = randomUUID();
    const ok = await d.push([
      insertRow('teams', { id: team, name: 'team', captain_member_id: captain }),
      insertRow('team_members', { id: captain, name: 'cap', team_id: team }),
    ]);
    expect(ok.status).toBe(200);
    const v = ok.body['bundle_seq'] as number;
    const r = await refused(d, [deleteRow('team_members', captain, v)]);
    expect(r).toMatchObject({
      status: 409,
      body: {
        conflict: {
          table: 'team_members',
          key: { id: captain },
          op: 'DELETE',
          server_row_version: v,
          server_row: { id: captain, name: 'cap', team_id: team },
          reason: 'foreign_key',
          constraint: 'teams_captain_member_id_fkey',
        },
      },
    });
    await commits(d, [insertRow('teams', { id: randomUUID(), name: 'other', captain_member_id: null })]);
  });

  test('UNIQUE: the row repeating an existing value, with constraint and its own (absent) server row', async () => {
    const d = await device();
    expect((await d.push([userRow(randomUUID(), 'same')])).status).toBe(200);
    const dup = randomUUID();
    const r = await refused(d, [userRow(dup, 'same')]);
    expect(r).toMatchObject({
      status: 409,
      body: {
        error: 'push_conflict',
        conflict: {
          key: { id: dup },
          op: 'INSERT',
          server_row_version: 0,
          server_row: null,
          reason: 'unique',
          constraint: 'users_email_key',
        },
      },
    });
    await commits(d, [userRow(dup, 'different')]);
  });

  test('UNIQUE between two rows of one bundle: the second is refused', async () => {
    const d = await device();
    const a = randomUUID();
    const b = randomUUID();
    const rows = [userRow(a, 'twin'), userRow(b, 'twin')];
    const r = await refused(d, rows);
    expect(r).toMatchObject({ status: 409, body: { conflict: { key: { id: b }, reason: 'unique' } } });
    await commits(d, [rows[0]]);
  });

  test('NOT NULL: reason not_null with the column', async () => {
    const d = await device();
    const id = randomUUID();
    const r = await refused(d, [insertRow('users', { id, name: null, email: 'x@example.com' })]);
    expect(r).toMatchObject({
      status: 409,
      body: { conflict: { key: { id }, reason: 'not_null', column: 'name' } },
    });
    await commits(d, [insertRow('users', { id, name: 'named', email: 'x@example.com' })]);
  });

  test('NOT NULL on an UPDATE of an existing row carries the server row', async () => {
    const d = await device();
    const id = randomUUID();
    expect((await d.push([userRow(id, 'before')])).status).toBe(200);
    const r = await refused(d, [
      {
        schema: 'business',
        table: 'users',
        key: { id },
        op: 'UPDATE',
        base_row_version: 1,
        payload: { name: null },
      },
    ]);
    expect(r).toMatchObject({
      status: 409,
      body: {
        conflict: {
          op: 'UPDATE',
          server_row_version: 1,
          server_row: { id, name: 'before' },
          reason: 'not_null',
          column: 'name',
        },
      },
    });
    await commits(d, [userRow(id, 'after', 1, 'UPDATE')]);
  });

  test('CHECK: reason check with the constraint', async () => {
    const d = await device();
    const id = randomUUID();
    const r = await refused(d, [insertRow('typed_rows', { id, name: 'n', enabled_flag: 5 })]);
    expect(r).toMatchObject({
      status: 409,
      body: { conflict: { key: { id }, reason: 'check', constraint: 'typed_rows_enabled_flag_chk' } },
    });
    await commits(d, [insertRow('typed_rows', { id, name: 'n', enabled_flag: 1 })]);
  });

  test('the refused session can be deleted by the client', async () => {
    const d = await device();
    const create = await d.json('POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: 1 });
    const pushId = create.body['push_id'] as string;
    await d.json('POST', `/sync/push-sessions/${pushId}/chunks`, {
      start_row_ordinal: 0,
      rows: [post(randomUUID(), randomUUID())],
    });
    expect((await d.json('POST', `/sync/push-sessions/${pushId}/commit`)).status).toBe(409);
    expect((await d.req('DELETE', `/sync/push-sessions/${pushId}`)).statusCode).toBe(204);
    await commits(d, [userRow(randomUUID(), 'after-delete')]);
  });
});

describe('400 push_row_invalid for values their column type refuses, at chunk upload', () => {
  const cases: Array<[string, string, Record<string, unknown>, string]> = [
    [
      'a non-uuid string in a uuid column',
      'posts',
      { title: 't', content: 'c', author_id: 'not-a-uuid' },
      'author_id',
    ],
    [
      'a number beyond bigint',
      'typed_rows',
      { name: 'n', enabled_flag: 1, count_value: 1e30 },
      'count_value',
    ],
    [
      'a fractional number in a bigint column',
      'typed_rows',
      { name: 'n', enabled_flag: 1.5 },
      'enabled_flag',
    ],
    [
      'an impossible date',
      'typed_rows',
      { name: 'n', enabled_flag: 0, created_at: '2026-13-45T00:00:00Z' },
      'created_at',
    ],
    ['a string in a float column', 'typed_rows', { name: 'n', enabled_flag: 0, rating: 'high' }, 'rating'],
    ['U+0000 in a text column', 'users', { name: 'a\u0000b', email: 'nul@example.com' }, 'name'],
  ];
  for (const [what, table, payload, column] of cases) {
    test(what, async () => {
      const d = await device();
      const id = randomUUID();
      const rows = [
        userRow(randomUUID(), `ok1-${what}`),
        userRow(randomUUID(), `ok2-${what}`),
        userRow(randomUUID(), `ok3-${what}`),
        insertRow(table, { id, ...payload }),
      ];
      const r = await refused(d, rows, { chunkSize: 2 });
      expect(r).toEqual({
        status: 400,
        body: {
          error: 'push_row_invalid',
          message: expect.stringContaining(column),
          row_ordinal: 3,
          conflict: {
            schema: 'business',
            table,
            key: { id },
            op: 'INSERT',
            base_row_version: 0,
            server_row_version: 0,
            server_row_deleted: false,
            server_row: null,
            reason: 'invalid_value',
            column,
          },
        },
      });
      await commits(d, rows.slice(0, 3));
    });
  }

  test('valid values of every typed column pass chunk upload and commit', async () => {
    const d = await device();
    await commits(d, [
      insertRow('typed_rows', {
        id: randomUUID(),
        name: 'typed',
        note: null,
        count_value: 9007199254740991,
        enabled_flag: 1,
        rating: 2.5,
        data: 'AAEC',
        created_at: '2026-01-02T03:04:05.678Z',
      }),
      insertRow('posts', { id: randomUUID(), title: 't', content: 'c', author_id: null }),
    ]);
  });
});
