import { type TempSqlite, tempSqlite } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSyncClient, isClientError, type SyncClient } from '../../../src/client/index.js';

const SCHEMA_SQL = `
CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, active BOOLEAN, meta JSON);
CREATE TABLE files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB);
CREATE TABLE file_reviews (id BLOB PRIMARY KEY NOT NULL, review TEXT NOT NULL,
  file_id BLOB NOT NULL REFERENCES files(id) ON DELETE CASCADE);
CREATE TABLE memberships (org TEXT NOT NULL, member TEXT NOT NULL, role TEXT, PRIMARY KEY (org, member));
`;

function uuidBytes(u: string): Buffer {
  return Buffer.from(u.replaceAll('-', ''), 'hex');
}

describe('local capture', () => {
  let tmp: TempSqlite;
  let db: Database.Database;
  let client: SyncClient;

  beforeEach(async () => {
    tmp = await tempSqlite('oversync-client');
    db = new Database(tmp.path);
    db.exec(SCHEMA_SQL);
    client = createSyncClient({
      writer: db,
      baseUrl: 'http://127.0.0.1:9',
      schema: 'business',
      tables: [
        { table: 'users', syncKeyColumns: ['id'] },
        { table: 'file_reviews', syncKeyColumns: ['id'] },
        { table: 'files', syncKeyColumns: ['id'] },
        { table: 'memberships', syncKeyColumns: ['org', 'member'] },
      ],
    });
  });
  afterEach(async () => {
    await client.close();
    db.close();
    await tmp.cleanup();
  });

  const dirty = () =>
    db
      .prepare(
        `SELECT table_name, key_json, op, base_row_version, payload FROM _sync_dirty_rows ORDER BY dirty_ordinal`,
      )
      .all() as Array<{
      table_name: string;
      key_json: string;
      op: string;
      base_row_version: number;
      payload: string | null;
    }>;

  it('captures inserts, updates and deletes as one coalesced intent per key', async () => {
    await client.open();
    expect(client.sourceId).toMatch(/^[0-9a-f-]{36}$/);
    db.prepare(`INSERT INTO users VALUES ('u1', 'Ann', 1, '{"a":1}')`).run();
    db.prepare(`UPDATE users SET name = 'Anna' WHERE id = 'u1'`).run();
    let rows = dirty();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      table_name: 'users',
      key_json: '{"id":"u1"}',
      op: 'INSERT',
      base_row_version: 0,
    });
    expect(JSON.parse(rows[0]?.payload ?? 'null')).toEqual({
      id: 'u1',
      name: 'Anna',
      active: 1,
      meta: '{"a":1}',
    });
    db.prepare(`DELETE FROM users WHERE id = 'u1'`).run();
    rows = dirty();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ op: 'DELETE', payload: null });
  });

  it('records a key-changing update as DELETE(old) + INSERT(new), blob keys as hex, composite keys', async () => {
    await client.open();
    const f = '0b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
    db.prepare(`INSERT INTO files VALUES (?, 'a.txt', x'00ff')`).run(uuidBytes(f));
    db.prepare(`INSERT INTO memberships VALUES ('acme', 'bob', 'admin')`).run();
    db.prepare(`UPDATE memberships SET member = 'carol' WHERE member = 'bob'`).run();
    const rows = dirty();
    const byKey = Object.fromEntries(rows.map((r) => [r.key_json, r]));
    expect(byKey[`{"id":"${f.replaceAll('-', '')}"}`]?.payload).toBe(
      `{"id":"${f.replaceAll('-', '')}","name":"a.txt","data":"00ff"}`,
    );
    expect(byKey['{"org":"acme","member":"bob"}']?.op).toBe('DELETE');
    expect(byKey['{"org":"acme","member":"carol"}']?.op).toBe('INSERT');
  });

  it('stays quiet while apply mode is set and refuses app writes during a destructive transition', async () => {
    await client.open();
    db.prepare(`UPDATE _sync_apply_state SET apply_mode = 1`).run();
    db.prepare(`INSERT INTO users VALUES ('u2', 'Bo', 0, NULL)`).run();
    db.prepare(`UPDATE _sync_apply_state SET apply_mode = 0`).run();
    expect(dirty()).toHaveLength(0);
    db.prepare(`UPDATE _sync_operation_state SET kind = 'remote_replace'`).run();
    expect(() => db.prepare(`INSERT INTO users VALUES ('u3', 'C', 0, NULL)`).run()).toThrow(
      /SYNC_TRANSITION_PENDING/,
    );
    db.prepare(`UPDATE _sync_operation_state SET kind = 'none'`).run();
  });

  it('captures rows that existed before the first open, and cascades', async () => {
    const f = '1b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
    const r = '2b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
    db.prepare(`INSERT INTO users VALUES ('pre', 'Pre', 0, NULL)`).run();
    await client.open();
    expect(dirty().map((x) => x.key_json)).toEqual(['{"id":"pre"}']);
    db.prepare(`INSERT INTO files VALUES (?, 'f', NULL)`).run(uuidBytes(f));
    db.prepare(`INSERT INTO file_reviews VALUES (?, 'ok', ?)`).run(uuidBytes(r), uuidBytes(f));
    db.prepare(`DELETE FROM files`).run();
    // insert + delete of never-synced rows remain queued as DELETE (dropped at freeze time)
    expect(
      dirty()
        .filter((x) => x.table_name !== 'users')
        .map((x) => x.op),
    ).toEqual(['DELETE', 'DELETE']);
    await client.close();
    // a second open is idempotent and does not re-capture
    const again = createSyncClient({ ...client.options, writer: db });
    await again.open();
    expect(dirty()).toHaveLength(3);
    await again.close();
  });

  it('refuses a second client on the same database file until the first is closed', async () => {
    await client.open();
    const other = new Database(tmp.path);
    const second = createSyncClient({ ...client.options, writer: other });
    await expect(second.open()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_DATABASE_ALREADY_OWNED' });
    await client.close();
    await second.open();
    await second.close();
    other.close();
  });

  it('gates sync operations on lifecycle state and blocks detach with unsynced data', async () => {
    await expect(client.pushPending()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_OPEN_REQUIRED' });
    await client.open();
    await expect(client.pullToStable()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_ATTACH_REQUIRED' });
    db.prepare(`INSERT INTO users VALUES ('u9', 'Z', 0, NULL)`).run();
    expect(await client.detach()).toEqual({ outcome: 'blocked_unsynced_data', pendingRowCount: 1 });
    expect(db.prepare(`SELECT COUNT(*) FROM users`).pluck().get()).toBe(1);
    const before = client.sourceId;
    expect(await client.detach({ force: true })).toMatchObject({ outcome: 'detached' });
    expect(db.prepare(`SELECT COUNT(*) FROM users`).pluck().get()).toBe(0);
    expect(client.sourceId).not.toBe(before);
    await client.close();
    await expect(client.open()).rejects.toSatisfy((e: unknown) => isClientError(e, 'OVERSYNC_CLIENT_CLOSED'));
  });

  it('rejects bad options and unsupported tables', async () => {
    expect(() => createSyncClient({ writer: db, baseUrl: 'nope', schema: 'b', tables: [] })).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_CLIENT_INVALID_OPTIONS' }),
    );
    db.exec(`CREATE TABLE ints (id INTEGER PRIMARY KEY, v TEXT)`);
    const c = createSyncClient({
      writer: db,
      baseUrl: 'http://127.0.0.1:9',
      schema: 'business',
      tables: [{ table: 'ints', syncKeyColumns: ['id'] }],
    });
    await client.close();
    await expect(c.open()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_UNSUPPORTED_SCHEMA' });
    await c.close();
  });

  it('honours an aborted signal', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(client.open({ signal: ac.signal })).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_ABORTED',
    });
  });

  it('uninstall drops triggers and metadata but keeps business data', async () => {
    await client.open();
    db.prepare(`INSERT INTO users VALUES ('k', 'Keep', 0, NULL)`).run();
    await client.uninstall();
    const triggers = db.prepare(`SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'`).pluck().get();
    const meta = db
      .prepare(`SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '\\_sync\\_%' ESCAPE '\\'`)
      .pluck()
      .get();
    expect([triggers, meta]).toEqual([0, 0]);
    expect(db.prepare(`SELECT name FROM users`).pluck().all()).toEqual(['Keep']);
    // a new client starts fresh: new source id, the existing rows become local intents
    const again = createSyncClient({ ...client.options, writer: db });
    await again.open();
    expect(again.sourceId).not.toBe(client.sourceId);
    expect(dirty().map((r) => r.key_json)).toEqual(['{"id":"k"}']);
    await again.close();
  });
});
