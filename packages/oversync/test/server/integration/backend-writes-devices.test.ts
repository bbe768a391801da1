/**
 * Backend writes reach real devices (issue #20's "done when"): two @x/oversync clients (SQLite
 * files) of one user, a server whose tables opt in to backend writes, and plain SQL from a bare
 * `pg` client in between. The devices pull the backend's bundles like any other (their hashes are
 * checked in backend-writes.test.ts), their live queries see the change, and their own edits keep
 * pushing on top.
 */
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin, type SyncService } from '@x/oversync/server';
import { createTestDatabase, type TempDir, type TestDatabase, tempDir } from '@x/testkit';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type Device, openDevice, rows } from '../../client/helpers/device.js';
import { CLIENT_TABLES, PG_BUSINESS_DDL } from '../../client/helpers/schema.js';
import { randomUUID } from '../fixture.js';

let db: TestDatabase;
let cluster: ReturnType<typeof createCluster>;
let service: SyncService;
let app: FastifyInstance;
let baseUrl: string;
let sql: pg.Client;
let dir: TempDir;
const devices: Device[] = [];

beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'oversync_backend_devices' });
  sql = new pg.Client({ connectionString: db.url });
  await sql.connect();
  await sql.query(PG_BUSINESS_DDL);
  cluster = createCluster({ primary: db.url });
  service = createSyncService({
    db: cluster,
    registeredTables: CLIENT_TABLES.map((t) => ({ schema: 'business', ...t, backendWrites: true })),
  });
  await service.bootstrap();
  app = Fastify({ logger: false });
  await app.register(oversyncFastifyPlugin, {
    service,
    userIdFromRequest: (req) => req.headers.authorization?.replace(/^Bearer /, ''),
  });
  baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });
  dir = await tempDir('oversync-backend-devices');
});
afterAll(async () => {
  for (const d of devices) await d.close().catch(() => undefined);
  await service?.close();
  await app?.close();
  await cluster?.close();
  await sql?.end();
  await db?.drop();
  await dir?.cleanup();
});

async function attached(user: string): Promise<Device> {
  const d = openDevice(`dev${devices.length}`, join(dir.path, `dev${devices.length}.db`), baseUrl, user);
  devices.push(d);
  await d.client.open();
  await d.client.attach(user);
  return d;
}

test('a plain UPDATE, INSERT and DELETE through a bare pg client arrive on two devices', async () => {
  const user = `u-${randomUUID()}`;
  const laptop = await attached(user);
  const phone = await attached(user);
  const ann = randomUUID();
  laptop.db.prepare(`INSERT INTO users (id, name, email) VALUES (?, 'Ann', 'ann@x')`).run(ann);
  await laptop.client.sync();
  await phone.client.sync();
  expect(rows(phone.db, 'users')).toEqual([{ id: ann, name: 'Ann', email: 'ann@x' }]);

  // what an admin does in psql
  const post = randomUUID();
  const typed = randomUUID();
  await sql.query('BEGIN');
  await sql.query(`UPDATE business.users SET name = 'Ann (verified)' WHERE _sync_scope_id = $1 AND id = $2`, [
    user,
    ann,
  ]);
  await sql.query(
    `INSERT INTO business.posts (_sync_scope_id, id, title, content, author_id) VALUES ($1, $2, 'Welcome', '<p>hi & bye</p>', $3)`,
    [user, post, ann],
  );
  await sql.query(
    `INSERT INTO business.typed_rows (_sync_scope_id, id, name, count_value, enabled_flag, rating, data, created_at, doc)
     VALUES ($1, $2, 'typed', 42, true, 0.1, '\\x00ff10'::bytea, '2024-05-06T07:08:09.123Z', '{"b": [1, 2.5e-7], "a": "\u2028"}')`,
    [user, typed],
  );
  await sql.query('COMMIT');

  for (const d of [laptop, phone]) {
    await d.client.sync();
    expect(rows(d.db, 'users')).toEqual([{ id: ann, name: 'Ann (verified)', email: 'ann@x' }]);
    expect(rows(d.db, 'posts')).toEqual([
      { id: post, title: 'Welcome', content: '<p>hi & bye</p>', author_id: ann },
    ]);
    const [t] = rows(d.db, 'typed_rows');
    expect(t).toMatchObject({ id: typed, name: 'typed', count_value: 42, rating: 0.1 });
    expect(Buffer.from(t!['data'] as Uint8Array).toString('hex')).toBe('00ff10');
  }

  // the phone edits on top of the backend's version; then the backend deletes with a cascade-free DELETE
  phone.db.prepare(`UPDATE posts SET title = 'Welcome!' WHERE id = ?`).run(post);
  await phone.client.sync();
  await sql.query('DELETE FROM business.typed_rows WHERE _sync_scope_id = $1 AND id = $2', [user, typed]);
  for (const d of [laptop, phone]) {
    await d.client.sync();
    expect(rows(d.db, 'posts')[0]).toMatchObject({ title: 'Welcome!' });
    expect(rows(d.db, 'typed_rows')).toEqual([]);
  }
  const server = await sql.query('SELECT title FROM business.posts WHERE _sync_scope_id = $1', [user]);
  expect(server.rows).toEqual([{ title: 'Welcome!' }]);
});

test("a plain UPDATE through a bare pg client reaches two devices' live queries", async () => {
  const user = `u-${randomUUID()}`;
  const [a, b] = [await attached(user), await attached(user)];
  const id = randomUUID();
  a.db.prepare(`INSERT INTO users (id, name) VALUES (?, 'before')`).run(id);
  await a.client.sync();
  await b.client.sync();
  const stop = new AbortController();
  const live = [a, b].map((d) =>
    d.client
      .watch<{ name: string }>('SELECT name FROM users', [], { signal: stop.signal })
      [Symbol.asyncIterator](),
  );
  for (const it of live) expect((await it.next()).value).toEqual([{ name: 'before' }]);

  await sql.query(`UPDATE business.users SET name = 'after' WHERE _sync_scope_id = $1 AND id = $2`, [
    user,
    id,
  ]);
  await Promise.all([a.client.sync(), b.client.sync()]);
  for (const it of live) expect((await it.next()).value).toEqual([{ name: 'after' }]);
  stop.abort();
});
