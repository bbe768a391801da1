/**
 * Our own sync client against the reference profile, with the local table shapes the reference's
 * clients keep (TEXT ids, 16-byte BLOB ids for files and file_reviews, INTEGER flags, REAL, BLOB,
 * RFC 3339 TEXT timestamps): all eight tables, the team <-> member cycle and the category
 * self-reference, seeded on one device, hydrated on a second, edited there and pulled back.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createSyncClient, type SyncClient } from '@x/oversync/client';
import { createTestDatabase, type TestDatabase, tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signJwt } from '../../src/jwt.js';
import { referenceProfile } from '../../src/profiles.js';
import { type DemoServer, startDemoServer } from '../../src/server.js';

const SECRET = 'reference-clients-secret';
const LOCAL_DDL = `
CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
  created_at TEXT, updated_at TEXT);
CREATE TABLE posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL,
  author_id TEXT REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED, created_at TEXT, updated_at TEXT);
CREATE TABLE categories (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
  parent_id TEXT REFERENCES categories(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE teams (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
  captain_member_id TEXT REFERENCES team_members(id) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE team_members (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL,
  team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE files (id BLOB PRIMARY KEY NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE file_reviews (id BLOB PRIMARY KEY NOT NULL, review TEXT NOT NULL,
  file_id BLOB NOT NULL REFERENCES files(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE typed_rows (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, note TEXT, count_value INTEGER,
  enabled_flag INTEGER NOT NULL, rating REAL, data BLOB, created_at TEXT);
`;
const TABLES = referenceProfile.tables.map((t) => t.table);

let tdb: TestDatabase;
let server: DemoServer;
let dir: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  tdb = await createTestDatabase({ prefix: 'demo_refclients' });
  server = await startDemoServer({
    databaseUrl: tdb.url,
    port: 0,
    profile: referenceProfile,
    secret: SECRET,
  });
  dir = await tempDir('demo-refclients-');
});
afterAll(async () => {
  await server?.close();
  await tdb?.drop();
  await dir?.cleanup();
});

function device(name: string, user: string): { db: Database.Database; client: SyncClient } {
  const db = new Database(join(dir.path, `${name}.db`));
  db.exec(LOCAL_DDL);
  const client = createSyncClient({
    writer: db,
    baseUrl: server.url,
    token: () => signJwt(SECRET, { sub: user, did: name, ttlSeconds: 300 }),
    schema: 'business',
    tables: referenceProfile.tables,
  });
  return { db, client };
}

const dump = (db: Database.Database) =>
  Object.fromEntries(
    TABLES.map((t) => [
      t,
      (db.prepare(`SELECT * FROM ${t} ORDER BY id`).all() as Array<Record<string, unknown>>).map((r) =>
        Object.fromEntries(
          Object.entries(r).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('hex') : v]),
        ),
      ),
    ]),
  );

const blob = () => Buffer.from(randomUUID().replace(/-/g, ''), 'hex');

describe('our client against the reference profile, with the reference clients local shapes', () => {
  it('seeds all eight tables, hydrates a second device, and syncs an edit back', async () => {
    const user = `refc-${randomUUID().slice(0, 8)}`;
    const a = device('a', user);
    const b = device('b', user);
    try {
      const ids = {
        user: randomUUID(),
        team: randomUUID(),
        member: randomUUID(),
        root: randomUUID(),
        child: randomUUID(),
      };
      const fileId = blob();
      a.db.transaction(() => {
        a.db
          .prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)')
          .run(ids.user, 'Ann', 'ann@example.com');
        a.db
          .prepare('INSERT INTO posts (id, title, content, author_id) VALUES (?, ?, ?, ?)')
          .run(randomUUID(), 'Hi', 'x', ids.user);
        a.db
          .prepare('INSERT INTO categories (id, name, parent_id) VALUES (?, ?, ?)')
          .run(ids.child, 'child', ids.root);
        a.db
          .prepare('INSERT INTO categories (id, name, parent_id) VALUES (?, ?, NULL)')
          .run(ids.root, 'root');
        a.db
          .prepare('INSERT INTO teams (id, name, captain_member_id) VALUES (?, ?, ?)')
          .run(ids.team, 'Blue', ids.member);
        a.db
          .prepare('INSERT INTO team_members (id, name, team_id) VALUES (?, ?, ?)')
          .run(ids.member, 'Ann', ids.team);
        a.db
          .prepare('INSERT INTO files (id, name, data) VALUES (?, ?, ?)')
          .run(fileId, 'a.bin', Buffer.from([0, 255, 7]));
        a.db
          .prepare('INSERT INTO file_reviews (id, review, file_id) VALUES (?, ?, ?)')
          .run(blob(), 'ok', fileId);
        a.db
          .prepare(
            `INSERT INTO typed_rows (id, name, note, count_value, enabled_flag, rating, data, created_at)
             VALUES (?, 'typed', NULL, 42, 1, 4.5, ?, '2026-01-02T03:04:05Z')`,
          )
          .run(randomUUID(), Buffer.from('hi'));
      })();
      await a.client.open();
      expect((await a.client.attach(user)).outcome).toBe('seeded_from_local');
      const pushed = await a.client.sync();
      expect(pushed.push.outcome).toBe('committed');
      expect(pushed.push.rowCount).toBe(9);

      await b.client.open();
      const attached = await b.client.attach(user);
      expect(attached.outcome).toBe('used_remote_state');
      expect(attached.restore?.rowCount).toBe(9);
      const fromA = dump(a.db);
      expect(dump(b.db)).toEqual(fromA);
      for (const t of TABLES) expect((fromA[t] ?? []).length, t).toBeGreaterThan(0);

      b.db.prepare("UPDATE typed_rows SET note = 'edited on b', count_value = 43").run();
      b.db.prepare('DELETE FROM file_reviews').run();
      await b.client.sync();
      await a.client.sync();
      expect(dump(a.db)).toEqual(dump(b.db));
      expect(a.db.prepare('SELECT note, count_value FROM typed_rows').get()).toEqual({
        note: 'edited on b',
        count_value: 43,
      });
      expect(a.db.prepare('SELECT count(*) AS n FROM file_reviews').get()).toEqual({ n: 0 });
    } finally {
      await a.client.close();
      await b.client.close();
      a.db.close();
      b.db.close();
    }
  });
});
