import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTcpProxy,
  createTestDatabase,
  type TcpProxy,
  type TestDatabase,
  waitFor,
} from '../../src/index.js';

function viaProxy(url: string, proxy: TcpProxy): string {
  const u = new URL(url);
  u.hostname = proxy.host;
  u.port = String(proxy.port);
  return u.toString();
}

async function connect(url: string): Promise<{ client: pg.Client; errors: Error[] }> {
  const errors: Error[] = [];
  const client = new pg.Client({ connectionString: url });
  client.on('error', (e) => errors.push(e));
  await client.connect();
  return { client, errors };
}

describe('createTcpProxy in front of PostgreSQL', () => {
  let db: TestDatabase;
  let proxy: TcpProxy;
  beforeAll(async () => {
    db = await createTestDatabase({ prefix: 'proxy' });
    const u = new URL(db.url);
    proxy = await createTcpProxy({ host: u.hostname, port: Number(u.port) });
  });
  afterAll(async () => {
    await proxy?.close();
    await db?.drop();
  });

  it('forwards a live connection both ways', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    const { rows } = await client.query<{ db: string }>('SELECT current_database() AS db');
    expect(rows[0]?.db).toBe(db.name);
    expect(proxy.connections).toBe(1);
    await client.end();
  });

  it('cutAll() really breaks a live pg connection, and new connections still work', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    await client.query('SELECT 1');
    proxy.cutAll();
    await expect(client.query('SELECT 1')).rejects.toThrow();
    const again = await connect(viaProxy(db.url, proxy));
    expect((await again.client.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
    await again.client.end();
  });

  it('setDelay() holds back the chunks of each direction, in order', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    await client.query('SELECT 1');
    const before = proxy.delayedChunks;
    proxy.setDelay(150);
    // The request and its answer both went through the delay (how long is a bench's business).
    expect((await client.query<{ n: number }>('SELECT 2 AS n')).rows[0]?.n).toBe(2);
    expect(proxy.delayedChunks - before).toBeGreaterThanOrEqual(2);
    // order is kept across delayed chunks: two queries in one go answer in order
    const [a, b] = await Promise.all([client.query('SELECT 3 AS n'), client.query('SELECT 4 AS n')]);
    expect([a.rows[0]?.n, b.rows[0]?.n]).toEqual([3, 4]);
    proxy.setDelay(0);
    await client.end();
  });

  it('setDropping(true) makes queries hang without closing the connection', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    proxy.setDropping(true);
    const before = proxy.droppedChunks;
    let settled = false;
    const query = client.query('SELECT 1').then(
      () => 'answered',
      () => 'failed',
    );
    void query.finally(() => {
      settled = true;
    });
    // the request itself was discarded, so no answer can ever come back on this connection
    await waitFor(() => proxy.droppedChunks > before, { what: 'the request to be dropped' });
    expect(settled).toBe(false);
    expect(proxy.connections).toBe(1);
    proxy.setDropping(false);
    proxy.cutAll();
    expect(await query).toBe('failed');
    await client.end().catch(() => undefined);
  });

  it('close() is idempotent and refuses new connections', async () => {
    const other = await createTcpProxy({ host: '127.0.0.1', port: proxy.port });
    const port = other.port;
    await Promise.all([other.close(), other[Symbol.asyncDispose]()]);
    const client = new pg.Client({ host: '127.0.0.1', port, connectionTimeoutMillis: 2000 });
    await expect(client.connect()).rejects.toThrow();
  });
});
