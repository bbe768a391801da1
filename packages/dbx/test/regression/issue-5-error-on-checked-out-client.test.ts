import { createTestDatabase, type TestDatabase } from '@x/testkit';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type Cluster, createCluster } from '../../src/index.js';

// Found while building issue 5: pg-pool removes its error listener while a client is checked out, so
// a backend killed between two statements of a transaction (begin() handle idle in user code) made
// pg emit 'error' with no listener: an uncaught exception that takes the process down.
let db: TestDatabase;
let cluster: Cluster;
beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'dbxreg' });
  cluster = createCluster({ primary: db.url, healthCheck: { intervalMs: 200 } });
});
afterAll(async () => {
  await cluster?.close();
  await db?.drop();
});

it('a backend killed while its client is checked out and idle fails the next statement, not the process', async () => {
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown) => uncaught.push(e);
  process.on('uncaughtException', onUncaught);
  try {
    const tx = await cluster.begin();
    const pid = (await tx.queryRow<{ pid: number }>('select pg_backend_pid() as pid'))?.pid;
    const admin = new pg.Client(db.url);
    await admin.connect();
    await admin.query('select pg_terminate_backend($1)', [pid]);
    await admin.end();
    // A window, not an event: the FATAL message must arrive while nobody queries, and dbx offers no
    // event for an error on a checked-out client (its trace, the node's lastError, is cleared by the
    // health check that error triggers).
    await new Promise((r) => setTimeout(r, 200));
    await expect(tx.exec('select 1')).rejects.toMatchObject({ code: 'DBX_CONNECTION_FAILED' });
    await tx.rollback(); // never fails: the server rolled back when the connection died
    expect(uncaught).toEqual([]);
    // The broken client was destroyed, not returned to the pool: the next query works.
    expect(await cluster.queryRow('select 1 as ok')).toEqual({ ok: 1 });
  } finally {
    process.off('uncaughtException', onUncaught);
  }
});
