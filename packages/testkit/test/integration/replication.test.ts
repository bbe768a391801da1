import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PgCluster, startPostgres } from '../../src/index.js';
import { isAlive } from '../../src/internal/procs.js';

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function query<R extends pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = await connect(url);
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

async function count(url: string): Promise<number> {
  const rows = await query<{ n: number }>(url, 'SELECT count(*)::int AS n FROM items');
  return rows[0]?.n ?? -1;
}

// Faults are injected into a cluster of this file's own, never into the shared one.
describe('startPostgres: a primary and two streaming replicas', () => {
  let cluster: PgCluster;
  beforeAll(async () => {
    cluster = await startPostgres({ replicas: 2, embedded: true });
    await query(cluster.primary.url, 'CREATE TABLE items (id int PRIMARY KEY, label text)');
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('reports distinct nodes with URLs', () => {
    expect(cluster.external).toBe(false);
    expect(cluster.replicas.map((r) => r.name)).toEqual(['replica1', 'replica2']);
    const ports = new Set([cluster.primary, ...cluster.replicas].map((n) => n.port));
    expect(ports.size).toBe(3);
    expect(cluster.primary.urlFor('other')).toMatch(/\/other$/);
  });

  it('replicates a row written on the primary to each replica', async () => {
    await query(cluster.primary.url, "INSERT INTO items VALUES (1, 'one')");
    await cluster.waitForReplicas();
    for (const replica of cluster.replicas) {
      const rows = await query<{ label: string }>(replica.url, 'SELECT label FROM items WHERE id = 1');
      expect(rows).toEqual([{ label: 'one' }]);
      const recovery = await query<{ r: boolean }>(replica.url, 'SELECT pg_is_in_recovery() AS r');
      expect(recovery[0]?.r).toBe(true);
    }
  });

  it('a replica rejects writes with SQLSTATE 25006', async () => {
    const replica = cluster.replicas[0];
    if (!replica) throw new Error('no replica');
    await expect(query(replica.url, "INSERT INTO items VALUES (99, 'nope')")).rejects.toMatchObject({
      code: '25006',
    });
  });

  it('paused replay makes a replica lag; resuming catches it up', async () => {
    const [lagging, other] = cluster.replicas;
    if (!lagging || !other) throw new Error('no replicas');
    const before = await count(lagging.url);
    await lagging.pauseReplay();
    await query(cluster.primary.url, "INSERT INTO items SELECT g, 'bulk' FROM generate_series(100, 199) g");
    // The other replica gets it, so the WAL has been shipped; the paused one has not applied it.
    await expect(cluster.waitForReplicas(1_000)).rejects.toMatchObject({ code: 'TESTKIT_TIMEOUT' });
    expect(await count(other.url)).toBe(before + 100);
    expect(await count(lagging.url)).toBe(before);
    const lag = await query<{ behind: boolean }>(
      lagging.url,
      'SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) > 0 AS behind',
    );
    expect(lag[0]?.behind).toBe(true);
    await lagging.resumeReplay();
    await cluster.waitForReplicas();
    expect(await count(lagging.url)).toBe(before + 100);
  });

  it('pauseReplay on the primary fails with TESTKIT_NOT_A_REPLICA', async () => {
    await expect(cluster.primary.pauseReplay()).rejects.toMatchObject({ code: 'TESTKIT_NOT_A_REPLICA' });
  });

  it('kill() breaks live connections; start() brings the node back with its data', async () => {
    const client = await connect(cluster.primary.url);
    const backendPid =
      (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? 0;
    const port = cluster.primary.port;
    await cluster.primary.kill();
    // The backend serving the live connection died with the postmaster (not later, on its own);
    // it may linger as a zombie until whatever adopted it reaps it.
    expect(await isAlive(backendPid)).toBe(false);
    await expect(client.query('SELECT 1')).rejects.toThrow();
    await expect(query(cluster.primary.url, 'SELECT 1')).rejects.toThrow();
    await cluster.primary.start();
    expect(cluster.primary.port).toBe(port);
    expect(await count(cluster.primary.url)).toBeGreaterThanOrEqual(101);
    // Replicas reconnect to the restarted primary and keep streaming.
    await query(cluster.primary.url, "INSERT INTO items VALUES (2, 'after-restart')");
    await cluster.waitForReplicas();
    for (const replica of cluster.replicas) {
      expect(await query(replica.url, 'SELECT 1 FROM items WHERE id = 2')).toHaveLength(1);
    }
  });

  it('survives kill() and start() back to back', async () => {
    for (let i = 0; i < 3; i++) {
      await cluster.primary.kill();
      await cluster.primary.start();
      expect(await count(cluster.primary.url)).toBeGreaterThanOrEqual(101);
    }
  });

  it('stop() shuts a replica down cleanly and start() restarts it in recovery', async () => {
    const replica = cluster.replicas[0];
    if (!replica) throw new Error('no replica');
    await replica.stop();
    await expect(query(replica.url, 'SELECT 1')).rejects.toThrow();
    await query(cluster.primary.url, "INSERT INTO items VALUES (3, 'while-down')");
    await replica.start();
    await cluster.waitForReplicas();
    expect(await query(replica.url, 'SELECT 1 FROM items WHERE id = 3')).toHaveLength(1);
  });

  it('promote() turns a replica into a writable primary', async () => {
    const replica = cluster.replicas[1];
    if (!replica) throw new Error('no replica');
    await replica.promote();
    const rows = await query<{ r: boolean }>(replica.url, 'SELECT pg_is_in_recovery() AS r');
    expect(rows[0]?.r).toBe(false);
    await query(replica.url, "INSERT INTO items VALUES (1000, 'on the promoted node')");
    expect(await query(replica.url, 'SELECT 1 FROM items WHERE id = 1000')).toHaveLength(1);
    await expect(replica.promote()).rejects.toMatchObject({ code: 'TESTKIT_NOT_A_REPLICA' });
  });
});

describe('startPostgres options', () => {
  it('rejects a bad replica count with TESTKIT_INVALID_OPTIONS', async () => {
    await expect(startPostgres({ replicas: -1 })).rejects.toMatchObject({ code: 'TESTKIT_INVALID_OPTIONS' });
  });

  it('honours an aborted signal', async () => {
    const controller = new AbortController();
    controller.abort(new Error('stop right there'));
    await expect(startPostgres({ signal: controller.signal })).rejects.toThrow('stop right there');
  });

  it('stop() removes the data directories and is idempotent', async () => {
    const { existsSync } = await import('node:fs');
    const cluster = await startPostgres({ embedded: true });
    const dataDir = (cluster.primary as unknown as { dataDir: string }).dataDir;
    expect(existsSync(dataDir)).toBe(true);
    await Promise.all([cluster.stop(), cluster.stop()]);
    await cluster[Symbol.asyncDispose]();
    expect(existsSync(dataDir)).toBe(false);
    await expect(query(cluster.primary.url, 'SELECT 1')).rejects.toThrow();
  });
});
