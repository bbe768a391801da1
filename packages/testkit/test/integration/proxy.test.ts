import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTcpProxy, createTestDatabase, type TcpProxy, type TestDatabase } from '../../src/index.js';

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

  it('setDelay() adds latency to each direction', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    proxy.setDelay(150);
    const started = performance.now();
    await client.query('SELECT 1');
    // One request and one response chunk, each held back 150 ms. The delay is the subject, and a
    // lower bound only: timers never fire early, so a loaded machine cannot make this fail.
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    proxy.setDelay(0);
    await client.end();
  });

  it('setDropping(true) makes queries hang without closing the connection', async () => {
    const { client } = await connect(viaProxy(db.url, proxy));
    proxy.setDropping(true);
    const outcome = await Promise.race([
      client.query('SELECT 1').then(
        () => 'answered',
        () => 'failed',
      ),
      // a hang announces nothing: it is observed as no answer within a 400 ms window
      new Promise((r) => setTimeout(() => r('hung'), 400)),
    ]);
    expect(outcome).toBe('hung');
    expect(proxy.connections).toBe(1);
    proxy.setDropping(false);
    proxy.cutAll();
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
