import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { type ClientStatus, createSyncClient } from '@x/oversync/client';
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Database from 'better-sqlite3';
import Fastify from 'fastify';

// A sync server, in-process for the example (see the server example for a real one).
const pg = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });
// The same business tables as the server example (a database registers one set of tables).
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
const app = Fastify();
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => req.headers.authorization?.replace('Bearer ', ''), // the token is the user id here
});
const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });

// Two devices of one user: a phone and a laptop, each with its own SQLite file.
const user = `user-${randomUUID()}`;
const dir = mkdtempSync(join(tmpdir(), 'oversync-live-'));
let phoneOnline = true; // the phone's network, cut below
function device(name: string) {
  const db = new Database(join(dir, `${name}.db`));
  db.exec(
    `CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL DEFAULT '')`,
  );
  const client = createSyncClient({
    writer: db,
    baseUrl,
    token: user,
    schema: 'business',
    tables: [{ table: 'users', syncKeyColumns: ['id'] }],
    retry: { maxAttempts: 1 },
    fetch: (url, init) =>
      name !== 'phone' || phoneOnline
        ? fetch(url, init)
        : Promise.reject(new TypeError('fetch failed: offline')),
  });
  return { db, client };
}
const phone = device('phone');
const laptop = device('laptop');
for (const d of [phone, laptop]) {
  await d.client.open();
  await d.client.attach(user);
}

// The phone's screen: a live query. It yields the current rows at once, then again after every
// change to a table it reads (local writes, pulled bundles), re-run once per burst.
const screen = (async () => {
  for await (const rows of phone.client.watch<{ name: string }>(`SELECT name FROM users ORDER BY name`)) {
    console.log(
      'phone shows',
      rows.map((r) => r.name),
    );
    if (rows.length === 2) break; // ends the watch (as would its `signal` or `client.close()`)
  }
})();

// The callback form returns the function that ends it.
const stop = phone.client.watch<{ n: number }>(`SELECT count(*) AS n FROM users`, [], {
  onResult: (rows) => console.log('phone counts', rows[0]?.n),
  onError: (e) => console.error('watch failed', e),
});

// The phone's status line: `client.status` is one object, updated in place; each change emits
// `status` with it (connected, uploading, downloading, pendingChanges, lastPushAt, lastPullAt, lastError).
const statusLine = (s: ClientStatus) =>
  `${s.connected ? 'online' : 'offline'}, ${s.pendingChanges} change(s) waiting${s.uploading ? ', uploading' : ''}`;
let shown = '';
const offStatus = phone.client.on('status', (s) => {
  if (statusLine(s) === shown) return;
  shown = statusLine(s);
  console.log('phone status:', shown, s.lastError ? `(last error ${s.lastError.code})` : '');
});
const statusUntil = (ok: (s: ClientStatus) => boolean) =>
  new Promise<void>((resolve) => {
    if (ok(phone.client.status)) return resolve();
    const off = phone.client.on('status', (s) => {
      if (!ok(s)) return;
      off();
      resolve();
    });
  });

// Offline, the phone keeps working: its write shows at once, and waits to be pushed.
phoneOnline = false;
await phone.client.pullToStable().catch(() => {}); // fails at the network edge: status says offline
phone.db.prepare(`INSERT INTO users (id, name) VALUES (?, ?)`).run(randomUUID(), 'Ann (on the phone)');
await statusUntil((s) => !s.connected && s.pendingChanges === 1); // counted from the write itself

laptop.db.prepare(`INSERT INTO users (id, name) VALUES (?, ?)`).run(randomUUID(), 'Bob (on the laptop)');
await laptop.client.sync(); // the laptop's row reaches the server…
phoneOnline = true;
await phone.client.sync(); // …and the phone's live query once the phone pulls it
await screen;
stop();
await statusUntil((s) => s.connected && s.pendingChanges === 0);
console.log(
  'phone last push',
  phone.client.status.lastPushAt?.toISOString(),
  'last error',
  phone.client.status.lastError,
);
offStatus();

for (const d of [phone, laptop]) {
  await d.client.close();
  d.db.close();
}
rmSync(dir, { recursive: true, force: true });
await app.close();
await service.close();
await pg.close();
