import { type TempSqlite, tempSqlite } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSyncClient, type SyncClient } from '../../../src/client/index.js';

/** Called when a request reaches the network edge (a test's hook). */
let onRequest: (() => void) | undefined;

/** A network edge that never answers until the request is aborted. */
const hangingFetch = (_url: string, init: RequestInit) =>
  new Promise<Response>((_resolve, reject) => {
    init.signal?.addEventListener('abort', () => reject(init.signal?.reason), { once: true });
    onRequest?.();
  });

describe('cancellation and close', () => {
  let tmp: TempSqlite;
  let db: Database.Database;
  let client: SyncClient;

  beforeEach(async () => {
    tmp = await tempSqlite('oversync-client-life');
    db = new Database(tmp.path);
    db.exec(`CREATE TABLE notes (id TEXT PRIMARY KEY NOT NULL, body TEXT)`);
    client = createSyncClient({
      writer: db,
      baseUrl: 'http://127.0.0.1:9',
      fetch: hangingFetch,
      schema: 'business',
      tables: [{ table: 'notes', syncKeyColumns: ['id'] }],
    });
    await client.open();
  });
  afterEach(async () => {
    onRequest = undefined;
    await client.close();
    db.close();
    await tmp.cleanup();
  });

  it('every public operation rejects with OVERSYNC_CLIENT_ABORTED on an aborted signal', async () => {
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    const signal = ac.signal;
    const ops: Array<() => Promise<unknown>> = [
      () => client.open({ signal }),
      () => client.attach('u', { signal }),
      () => client.detach({ signal }),
      () => client.syncThenDetach({ signal }),
      () => client.pushPending({ signal }),
      () => client.pullToStable({ signal }),
      () => client.sync({ signal }),
      () => client.rebuild({ signal }),
      () => client.readStatus({ signal }),
      () => client.pendingStatus({ signal }),
      () => client.uninstall({ signal }),
    ];
    for (const op of ops) await expect(op()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_ABORTED' });
  });

  it('aborting an attach waiting on the network rejects promptly and persists nothing', async () => {
    const ac = new AbortController();
    let requests = 0;
    onRequest = () => {
      requests++;
      ac.abort(new Error('user cancelled'));
    };
    const p = client.attach('u1', { signal: ac.signal });
    await expect(p).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_ABORTED' });
    expect(requests).toBe(1);
    const s = await client.readStatus();
    expect(s).toMatchObject({ userId: '', connected: false });
  });

  it('close is idempotent, emits closed once, and later calls reject with OVERSYNC_CLIENT_CLOSED', async () => {
    let closed = 0;
    client.on('closed', () => closed++);
    await Promise.all([client.close(), client.close()]);
    await client[Symbol.asyncDispose]();
    expect(closed).toBe(1);
    for (const op of [
      () => client.readStatus(),
      () => client.attach('u'),
      () => client.sync(),
      () => client.open(),
    ]) {
      await expect(op()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_CLOSED' });
    }
    expect(() => client.start()).toThrow(expect.objectContaining({ code: 'OVERSYNC_CLIENT_CLOSED' }));
  });
});
