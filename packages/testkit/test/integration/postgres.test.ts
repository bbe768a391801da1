import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, requireReplicas, type TestDatabase } from '../../src/index.js';

async function query<R extends pg.QueryResultRow>(
  url: string,
  sql: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

describe.skipIf(requireReplicas(2))('shared cluster: createTestDatabase', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase({ prefix: 'testkit' });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('gives a fresh database that exists on the primary and every replica', async () => {
    expect(db.replicaUrls).toHaveLength(2);
    await query(db.url, 'CREATE TABLE items (id int PRIMARY KEY, label text)');
    for (const url of db.replicaUrls) {
      const rows = await query<{ current_database: string }>(url, 'SELECT current_database()');
      expect(rows[0]?.current_database).toBe(db.name);
    }
  });

  it('uses the cluster the global setup provided, not one of its own', () => {
    const provided = inject('xTestkitPostgres');
    expect(provided).toBeDefined();
    expect(new URL(db.url).port).toBe(new URL(provided?.primaryUrl ?? '').port);
    expect(db.replicaUrls.map((u) => new URL(u).port)).toEqual(
      provided?.replicaUrls.map((u) => new URL(u).port),
    );
  });

  it('many test databases can be created at once from the one template', async () => {
    const dbs = await Promise.all(
      Array.from({ length: 6 }, () => createTestDatabase({ prefix: 'concurrent' })),
    );
    expect(new Set(dbs.map((d) => d.name)).size).toBe(6);
    await Promise.all(dbs.map((d) => query(d.url, 'CREATE TABLE t (x int)')));
    await Promise.all(dbs.map((d) => d.drop()));
  });

  it('drop() removes the database and is idempotent', async () => {
    const other = await createTestDatabase({ prefix: 'dropme' });
    await other.drop();
    await other.drop();
    const rows = await query(db.url, 'SELECT 1 FROM pg_database WHERE datname = $1', [other.name]);
    expect(rows).toHaveLength(0);
  });
});
