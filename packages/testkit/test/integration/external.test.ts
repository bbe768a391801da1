import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createTestDatabase,
  requireEmbedded,
  requireReplicas,
  spawnNode,
  startPostgres,
  type TestDatabase,
} from '../../src/index.js';

// DATABASE_URL mode, pointed at a database of the shared embedded cluster.
describe('DATABASE_URL: an external server instead of embedded ones', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ prefix: 'external' });
  });
  afterAll(async () => {
    await db?.drop();
  });
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('startPostgres() uses DATABASE_URL and DATABASE_REPLICA_URLS', async () => {
    vi.stubEnv('DATABASE_URL', db.url);
    vi.stubEnv('DATABASE_REPLICA_URLS', db.replicaUrls.join(' , '));
    await using cluster = await startPostgres({ replicas: 2 });
    expect(cluster.external).toBe(true);
    expect(cluster.primary.url).toBe(db.url);
    expect(cluster.replicas.map((r) => r.url)).toEqual(db.replicaUrls);
    const client = new pg.Client({ connectionString: cluster.primary.url });
    await client.connect();
    await client.query('CREATE TABLE ext (id int)');
    await client.end();
    await cluster.waitForReplicas();
    await expect(cluster.primary.kill()).rejects.toMatchObject({ code: 'TESTKIT_EXTERNAL_UNSUPPORTED' });
    await expect(cluster.replicas[0]?.stop()).rejects.toMatchObject({ code: 'TESTKIT_EXTERNAL_UNSUPPORTED' });
    expect(requireReplicas(2)).toBeUndefined();
    expect(requireEmbedded()).toMatch(/DATABASE_URL/);
  });

  it('too few replica URLs: startPostgres rejects and requireReplicas says why', async () => {
    vi.stubEnv('DATABASE_URL', db.url);
    vi.stubEnv('DATABASE_REPLICA_URLS', '');
    await expect(startPostgres({ replicas: 1 })).rejects.toMatchObject({
      code: 'TESTKIT_REPLICAS_UNAVAILABLE',
    });
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    try {
      expect(requireReplicas(1)).toMatch(/DATABASE_REPLICA_URLS lists 0/);
    } finally {
      warn.mockRestore();
    }
    expect(requireReplicas(0)).toBeUndefined();
  });

  it('embedded: true ignores DATABASE_URL (for fault tests)', async () => {
    vi.stubEnv('DATABASE_URL', db.url);
    await using cluster = await startPostgres({ embedded: true });
    expect(cluster.external).toBe(false);
    expect(cluster.primary.url).not.toBe(db.url);
  });

  it('the end of a run drops the test databases it left on the external server', async () => {
    const child = spawnNode(fileURLToPath(new URL('../fixtures/external-run.ts', import.meta.url)), [], {
      env: { DATABASE_URL: db.url, DATABASE_REPLICA_URLS: db.replicaUrls.join(',') },
    });
    const line = await child.waitForLine(/^RUN /, 30_000);
    expect((await child.wait()).code).toBe(0);
    const run = JSON.parse(line.slice(4)) as { external: boolean; runId: string; kept: string };
    expect(run.external).toBe(true);
    expect(run.kept).toContain(`_${run.runId}_`);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT datname FROM pg_database WHERE datname LIKE $1', [
        `%${run.runId}%`,
      ]);
      expect(rows).toEqual([]);
    } finally {
      await client.end();
    }
  });

  it('without DATABASE_URL nothing is skipped', () => {
    vi.stubEnv('DATABASE_URL', '');
    expect(requireReplicas(5)).toBeUndefined();
    expect(requireEmbedded()).toBeUndefined();
  });
});
