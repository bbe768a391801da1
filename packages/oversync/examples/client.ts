import { randomUUID } from 'node:crypto';
import { createCluster } from '@x/dbx';
import { createSyncClient } from '@x/oversync/client';
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Database from 'better-sqlite3';
import Fastify from 'fastify';

// A sync server to talk to, in-process for the example (see the server example for a real one).
const pg = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });
await pg.exec(`
  create schema if not exists business;
  create table if not exists business.users (
    _sync_scope_id text not null, id uuid not null, name text not null, email text not null default '',
    primary key (_sync_scope_id, id));
  create table if not exists business.posts (
    _sync_scope_id text not null, id uuid not null, author_id uuid not null, title text not null,
    primary key (_sync_scope_id, id),
    foreign key (_sync_scope_id, author_id) references business.users (_sync_scope_id, id)
      on delete cascade deferrable initially deferred);`);
const service = createSyncService({
  db: pg,
  registeredTables: [
    { schema: 'business', table: 'users', syncKeyColumns: ['id'] },
    { schema: 'business', table: 'posts', syncKeyColumns: ['id'] },
  ],
});
await service.bootstrap();
const tokens = new Map([['token-of-ann', 'user-123']]); // your token verifier
const app = Fastify();
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => tokens.get(req.headers.authorization?.replace('Bearer ', '') ?? ''),
});
const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });

// The device: its own SQLite tables, synced with the server's.
const db = new Database('notes.db');
db.exec(
  `CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL DEFAULT '')`,
);
const client = createSyncClient({
  writer: db, // or a WriteCoordinator
  baseUrl,
  token: () => 'token-of-ann', // sent as Authorization: Bearer …
  schema: 'business', // the server schema of the rows
  tables: [{ table: 'users', syncKeyColumns: ['id'] }],
  resolver: 'server-wins',
});
await client.open();
const attached = await client.attach('user-123'); // e.g. { status: 'connected', outcome: 'started_empty' }
console.log('attach', attached.status, attached.outcome);
db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), 'Ann');
const report = await client.sync(); // push, then pull to the server's stable point
console.log('push', report.push.outcome, report.push.rowCount, 'rows; pull', report.pull.outcome);
const onServer = await pg.queryRow<{ n: number }>(
  `select count(*)::int as n from business.users where _sync_scope_id = 'user-123'`,
);
const local = db.prepare('SELECT count(*) AS n FROM users').get() as { n: number };
console.log('rows on the server', onServer?.n, 'rows on the device', local.n);
// client.start() would keep syncing in the background (uploads, and downloads on `watch` events)

await client.close(); // does not close the database
db.close();
await app.close();
await service.close();
await pg.close();
