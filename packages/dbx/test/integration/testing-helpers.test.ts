import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it, type RunnerTestCase } from 'vitest';
import { type Cluster, currentQuerier } from '../../src/index.js';
import { createTestCluster, runInTx } from '../../src/testing/index.js';

// @x/dbx/testing is for users' own tests; ours feed it @x/testkit's cluster.
describe('@x/dbx/testing', () => {
  let db: TestDatabase;
  let fromFirstTest: Cluster | undefined;
  let skippedTask: RunnerTestCase | undefined;

  beforeAll(async () => {
    db = await createTestDatabase({ prefix: 'dbxtesting' });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('createTestCluster connects to the given primary and replicas', async () => {
    const cluster = await createTestCluster({ primaryUrl: db.url, replicaUrls: db.replicaUrls });
    fromFirstTest = cluster;
    await cluster.exec('create table t (id int primary key)');
    expect(cluster.stats().nodes.map((n) => n.name)).toEqual(['primary', 'replica1', 'replica2']);
    expect(await cluster.queryRow('select pg_is_in_recovery() as r')).toEqual({ r: false });
  });

  it('closed that cluster when the previous test finished', async () => {
    expect(fromFirstTest?.stats().closed).toBe(true);
    await expect(fromFirstTest?.query('select 1')).rejects.toMatchObject({ code: 'DBX_CLUSTER_CLOSED' });
  });

  it('defaults to DATABASE_URL', async () => {
    const saved = process.env.DATABASE_URL;
    process.env.DATABASE_URL = db.url;
    try {
      const cluster = await createTestCluster({ replicaUrls: [] });
      expect(await cluster.queryRow('select current_database() as d')).toEqual({ d: db.name });
    } finally {
      if (saved === undefined) delete process.env.DATABASE_URL;
      else process.env.DATABASE_URL = saved;
    }
  });

  it('reports an unreachable server through skip with a clear message', async () => {
    const reasons: string[] = [];
    await expect(
      createTestCluster({
        primaryUrl: 'postgres://u:secret@127.0.0.1:1/nope',
        probeTimeoutMs: 500,
        skip: (r) => reasons.push(r),
      }),
    ).rejects.toMatchObject({ code: 'DBX_CONNECTION_FAILED' });
    expect(reasons).toHaveLength(1);
    expect(reasons[0]).toMatch(/127\.0\.0\.1:1\/nope is unreachable/);
    expect(reasons[0]).not.toContain('secret');
  });

  it('(this test is skipped on purpose by createTestCluster: the server is unreachable)', async (ctx) => {
    skippedTask = ctx.task;
    await createTestCluster({ primaryUrl: 'postgres://u:p@127.0.0.1:1/nope', probeTimeoutMs: 500 });
    expect.unreachable('createTestCluster should have skipped this test');
  });

  it('the previous test was marked skipped by vitest, with the reason', () => {
    expect(skippedTask?.result?.state).toBe('skip');
    expect((skippedTask?.result as { note?: string } | undefined)?.note ?? '').toMatch(/unreachable/);
  });

  it('runInTx always rolls back, and the transaction is the current querier inside', async () => {
    const cluster = await createTestCluster({ primaryUrl: db.url });
    const seen = await runInTx(cluster, async (tx) => {
      expect(currentQuerier()).toBe(tx);
      await tx.exec('insert into t values (1)');
      return (await tx.queryRow<{ n: number }>('select count(*)::int as n from t'))?.n;
    });
    expect(seen).toBe(1);
    expect(await cluster.queryRow('select count(*)::int as n from t')).toEqual({ n: 0 });
    await expect(
      runInTx(cluster, async () => {
        throw new Error('inner');
      }),
    ).rejects.toThrow('inner');
  });
});
