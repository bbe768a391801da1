import { randomUUID } from 'node:crypto';
import { createSyncClient } from '@x/oversync/client';
import { type TempSqlite, tempSqlite } from '@x/testkit';
import { createWriteCoordinator, type WriteCoordinator } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CLIENT_TABLES, SQLITE_BUSINESS_DDL } from '../helpers/schema.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let server: TestServer;
let tmp: TempSqlite;
let db: Database.Database;
let coordinator: WriteCoordinator;

beforeAll(async () => {
  server = await startTestServer();
});
beforeEach(async () => {
  tmp = await tempSqlite('oversync-client-coord');
  db = new Database(tmp.path);
  db.exec(SQLITE_BUSINESS_DDL);
  coordinator = createWriteCoordinator({ database: db });
});
afterEach(async () => {
  await coordinator?.close();
  db?.close();
  await tmp?.cleanup();
});
afterAll(async () => {
  await server?.close();
});

/** A sync client of `user` whose writer is the test's coordinator. */
function coordinatedClient(user: string, extra: { uploadIntervalMs?: number } = {}) {
  return createSyncClient({
    writer: coordinator,
    baseUrl: server.baseUrl,
    token: user,
    schema: 'business',
    tables: CLIENT_TABLES,
    ...extra,
  });
}

describe('a write coordinator as the writer', () => {
  it('runs every client transaction through the coordinator and syncs app writes made through it', async () => {
    const user = `u-${randomUUID()}`;
    const client = coordinatedClient(user);
    const before = coordinator.seq;
    await client.open();
    await client.attach(user);
    expect(coordinator.seq).toBeGreaterThan(before);
    const id = randomUUID();
    await coordinator.submit((d) =>
      d.prepare(`INSERT INTO users(id, name) VALUES (?, 'via coordinator')`).run(id),
    );
    expect(await client.pendingStatus()).toMatchObject({ dirtyRows: 1 });
    const seqBeforePush = coordinator.seq;
    const r = await client.sync();
    expect(r.push).toMatchObject({ outcome: 'committed', rowCount: 1 });
    expect(coordinator.seq).toBeGreaterThan(seqBeforePush);
    const srv = await server.query<{ name: string }>(
      `SELECT name FROM business.users WHERE _sync_scope_id = $1`,
      [user],
    );
    expect(srv).toEqual([{ name: 'via coordinator' }]);
    await client.close();
  });

  it('background sync wakes on app commits, not on its own, and pushes them', async () => {
    const user = `u-${randomUUID()}`;
    const client = coordinatedClient(user, { uploadIntervalMs: 60_000 });
    await client.open();
    await client.attach(user);
    // a state check is a read: it runs on the coordinator's connection, not as an exclusive job
    const beforeRead = coordinator.seq;
    await client.pendingStatus();
    await client.readStatus();
    expect(coordinator.seq).toBe(beforeRead);
    // what one of the client's own write transactions (a re-open) costs in coordinator batches
    const before = coordinator.seq;
    await client.open();
    const perOpen = coordinator.seq - before;
    expect(perOpen).toBeGreaterThan(0);
    client.start();
    const idleFrom = coordinator.seq;
    // idle: no self-wake loop. Each re-open below commits through the coordinator; were the
    // client's own commits to wake its uploader, every one would add at least one more uploader
    // transaction (and those their own). Without one, only the background's first round (a
    // pending check and a pull: a handful of batches) comes on top of the re-opens.
    const opens = 30;
    for (let i = 0; i < opens; i++) await client.open();
    expect(coordinator.seq - idleFrom - opens * perOpen).toBeLessThan(30);
    const pushed = new Promise<void>((resolve) => {
      const off = client.on('applied', (e) => {
        if (e.kind === 'replay') {
          off();
          resolve();
        }
      });
    });
    await coordinator.submit((d) =>
      d.prepare(`INSERT INTO users(id, name) VALUES (?, 'woken')`).run(randomUUID()),
    );
    await pushed;
    const srv = await server.query<{ name: string }>(
      `SELECT name FROM business.users WHERE _sync_scope_id = $1`,
      [user],
    );
    expect(srv).toEqual([{ name: 'woken' }]);
    await client.close();
  });
});
