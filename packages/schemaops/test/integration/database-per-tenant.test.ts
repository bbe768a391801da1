import type { Cluster } from '@x/dbx';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  databasePerTenant,
  physicalDdlRequired,
  type TenantSource,
} from '../../src/index.js';
import { addColumnHandler, type Faults, MODEL_FIELDS_DDL, newCalls, testCluster } from '../helpers.js';

const TENANT_DBS = 4;

let ledgerDb: TestDatabase;
let baseDb: TestDatabase;
let tenantDbs: TestDatabase[];
let ledger: Cluster;
let source: TenantSource;

async function columnIn(url: string, column: string): Promise<boolean> {
  const c = testCluster(url, 1);
  try {
    const r = await c.query(
      `select 1 from information_schema.columns where table_schema = 'public' and table_name = 'items' and column_name = $1`,
      [column],
    );
    return r.rowCount === 1;
  } finally {
    await c.close();
  }
}

beforeAll(async () => {
  const dbs = await Promise.all(
    Array.from({ length: TENANT_DBS + 2 }, () => createTestDatabase({ prefix: 'schemaops_dbt' })),
  );
  ledgerDb = dbs[0] as TestDatabase;
  baseDb = dbs[1] as TestDatabase;
  tenantDbs = dbs.slice(2);
  for (const d of [baseDb, ...tenantDbs]) {
    const c = testCluster(d.url, 1);
    await c.exec('create table items (id int primary key, label text)');
    await c.close();
  }
  ledger = testCluster(ledgerDb.url);
  await ledger.exec(MODEL_FIELDS_DDL);
  const byId = new Map(tenantDbs.map((d, i) => [`t${i}`, d.url]));
  source = databasePerTenant({
    listTenants: async () => [...byId.keys()],
    connect: (_project, tenant) => byId.get(tenant) as string,
    base: () => baseDb.url,
    maxOpenClusters: 2,
  });
});
afterAll(async () => {
  await source?.close();
  await ledger?.close();
  await Promise.all([ledgerDb, baseDb, ...(tenantDbs ?? [])].map((d) => d?.drop()));
});

describe('database-per-tenant', () => {
  it('applies to the base database and every tenant database; the ledger lives elsewhere', async () => {
    const calls = newCalls();
    const ops = createSchemaOps({
      cluster: ledger,
      tenants: source,
      operations: { add_column: addColumnHandler({}, calls, physicalDdlRequired) },
    });
    const op = await ops.run({ project: 'acme', type: 'add_column', request: { column: 'd1' } });
    expect(op.status).toBe('committed');
    expect(op.steps.tenant_ddl.map((t) => [t.tenant, t.state])).toEqual(
      tenantDbs.map((_, i) => [`t${i}`, 'succeeded']),
    );
    for (const d of [baseDb, ...tenantDbs]) expect(await columnIn(d.url, 'd1')).toBe(true);
    expect(await columnIn(ledgerDb.url, 'd1')).toBe(false);
    await ops.close();
  });

  it('a failure at tenant k compensates the other databases; reconcile after a cache failure only refreshes', async () => {
    const faults: Faults = { tenants: new Set(['t2']) };
    const calls = newCalls();
    const ops = createSchemaOps({
      cluster: ledger,
      tenants: source,
      concurrency: 1,
      operations: { add_column: addColumnHandler(faults, calls, physicalDdlRequired) },
    });
    await expect(
      ops.run({ project: 'acme', type: 'add_column', request: { column: 'd2' } }),
    ).rejects.toMatchObject({
      code: 'SCHEMAOPS_STEP_FAILED',
      details: { step: 'tenant_ddl', tenant: 't2', status: 'compensated' },
    });
    for (const d of [baseDb, ...tenantDbs]) expect(await columnIn(d.url, 'd2')).toBe(false);
    expect(new Set(calls.compensate)).toEqual(new Set(['base', 't0', 't1']));

    faults.tenants = new Set();
    faults.cache = true;
    const failed = await ops
      .run({ project: 'acme', type: 'add_column', request: { column: 'd3' } })
      .catch((e: { details: { operationId: string } }) => e.details.operationId);
    faults.cache = false;
    const before = calls.apply.length;
    const op = await ops.reconcile(failed as string);
    expect(op.status).toBe('committed');
    expect(calls.apply.length).toBe(before);
    for (const d of tenantDbs) expect(await columnIn(d.url, 'd3')).toBe(true);
    await ops.close();
  });

  it('DDL as SQL text: one query per database, recorded after each commit, compensated with compensateSql', async () => {
    const ops = createSchemaOps({
      cluster: ledger,
      tenants: source,
      concurrency: 2,
      operations: {
        add_column: {
          applySql: ({ target, schema }) => {
            expect(schema).toBeNull();
            const bad = target.kind === 'tenant' && target.tenant === 't3' && failing;
            return `alter table items add column if not exists d4 text; select ${bad ? '1/0' : '1'}`;
          },
          compensateSql: () => 'alter table items drop column if exists d4',
        },
      },
    });
    let failing = true;
    await expect(ops.run({ project: 'acme', type: 'add_column', request: {} })).rejects.toMatchObject({
      code: 'SCHEMAOPS_STEP_FAILED',
      details: { tenant: 't3', status: 'compensated' },
    });
    for (const d of [baseDb, ...tenantDbs]) expect(await columnIn(d.url, 'd4')).toBe(false);
    failing = false;
    const op = await ops.run({ project: 'acme', type: 'add_column', request: {} });
    expect(op.steps.tenant_ddl.every((t) => t.state === 'succeeded' && t.attempts === 1)).toBe(true);
    for (const d of [baseDb, ...tenantDbs]) expect(await columnIn(d.url, 'd4')).toBe(true);
    await ops.close();
  });
});
