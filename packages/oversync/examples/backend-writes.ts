import { randomUUID } from 'node:crypto';
import { createCluster, isDbxError } from '@x/dbx';
import { BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE, createSyncService } from '@x/oversync/server';

// The same business tables as the server example.
const DDL = `
  create schema if not exists business;
  create table if not exists business.users (
    _sync_scope_id text not null, id uuid not null, name text not null, email text not null default '',
    primary key (_sync_scope_id, id));
  create table if not exists business.posts (
    _sync_scope_id text not null, id uuid not null, author_id uuid not null, title text not null,
    primary key (_sync_scope_id, id),
    foreign key (_sync_scope_id, author_id) references business.users (_sync_scope_id, id)
      on delete cascade deferrable initially deferred);`;

const db = createCluster({
  primary: {
    connectionString: process.env.DATABASE_URL ?? 'postgres://localhost/postgres',
    options: '-c TimeZone=UTC',
  },
});
await db.exec(DDL);
const sync = createSyncService({
  db,
  registeredTables: [
    // Opted in: plain SQL writes to these tables sync. posts too, since deleting a user cascades to it.
    { schema: 'business', table: 'users', syncKeyColumns: ['id'], backendWrites: true },
    { schema: 'business', table: 'posts', syncKeyColumns: ['id'], backendWrites: true },
  ],
  bundleChangeWatch: { enabled: true },
});
await sync.bootstrap(); // installs the capture triggers and the commit-time finalisation

// A scope is written once it is initialized: by its first device's connect, or (here) a server write.
const user = `user-${randomUUID()}`;
const ann = randomUUID();
await sync.scopeManager().execWrite(user, { writerId: 'signup' }, async (tx) => {
  await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
    ann,
    'Ann',
    'ann@x.test',
  ]);
});

// The existing backend keeps its SQL: any client, any statement, one bundle per scope at COMMIT.
await db.runTx(async (tx) => {
  await tx.query(`UPDATE business.users SET name = 'Ann (verified)' WHERE _sync_scope_id = $1 AND id = $2`, [
    user,
    ann,
  ]);
  await tx.query(
    'INSERT INTO business.posts (_sync_scope_id, id, author_id, title) VALUES ($1, $2, $3, $4)',
    [user, randomUUID(), ann, 'Welcome'],
  );
});

// What every device of the user pulls next: bundle 2, from source `oversync-backend-writes`.
const pulled = await sync.pull({ userId: user, sourceId: 'example-device' }, { afterBundleSeq: 1 });
for (const b of pulled.bundles) {
  console.log(
    b.bundle_seq,
    b.source_id,
    b.rows.map((r) => `${r.op} ${r.table} v${r.row_version}`),
  );
}

// A row no initialized scope owns is refused (SQLSTATE OV001), and its transaction rolls back.
try {
  await db.exec(`INSERT INTO business.users (_sync_scope_id, id, name) VALUES ('nobody', $1, 'x')`, [
    randomUUID(),
  ]);
} catch (e) {
  if (!isDbxError(e)) throw e;
  console.log('refused:', e.sqlState === BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE, e.message);
}

await sync.close();
await db.close();
