import { createCluster, currentQuerier } from '@x/dbx';

const replicas = (process.env.DATABASE_REPLICA_URLS ?? '').split(',').filter(Boolean);
await using db = createCluster({
  primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres',
  replicas,
});

await db.exec('create table if not exists users (id int primary key, email text not null)');

// Service code joins the caller's transaction, if any, without it being passed around.
async function audit(what: string) {
  const q = currentQuerier() ?? db;
  await q.exec('select $1::text', [what]);
}

// query/exec/runTx go to the primary; the callback commits, or rolls back when it throws.
await db.runTx(async (tx) => {
  await tx.exec('insert into users values ($1, $2) on conflict (id) do nothing', [1, 'a@example.com']);
  await audit('signup');
});

// Reads that may be served by a replica (the primary when none is healthy and caught up):
const { rows } = await db.readQuery<{ id: number }>('select id from users');
console.log(rows);

// Read-your-writes: in a session, reads only use replicas that replayed the session's writes.
const token = await db.session(async () => {
  await db.exec('update users set email = $1 where id = $2', ['b@example.com', 1]);
  console.log(await db.readQueryRow('select email from users where id = 1')); // { email: 'b@example.com' }
  return db.writeToken(); // e.g. "0/3000148": send it to the client, take it back as { token }
});
console.log(await db.readQueryRow('select email from users where id = 1', [], token ? { token } : {}));
