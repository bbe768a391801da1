import { type Cluster, createCluster, type Querier } from '@x/dbx';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { z } from 'zod';
import {
  createSchemaOps,
  type OperationHandler,
  physicalDdlRequired,
  type SchemaOps,
  type SchemaOpsOptions,
  schemaPerTenant,
} from '../src/index.js';

/** Quotes an identifier for test SQL. */
export const q = (name: string): string => `"${name.replace(/"/g, '""')}"`;

export function testCluster(url: string, poolMax = 12): Cluster {
  return createCluster({ primary: url, pool: { max: poolMax }, slowQueryThresholdMs: null });
}

export function tenantSchemas(project: string, n: number): string[] {
  return Array.from({ length: n }, (_, i) => `${project}_tenant_${String(i).padStart(3, '0')}`);
}

/** Creates the base schema and `n` tenant schemas, each with an `items` table. */
export async function createProjectSchemas(db: Querier, project: string, n: number): Promise<string[]> {
  const tenants = tenantSchemas(project, n);
  const sql = [project, ...tenants]
    .map((s) => `create schema ${q(s)}; create table ${q(s)}.items (id int primary key, label text);`)
    .join('\n');
  await db.exec(sql);
  return tenants;
}

export const MODEL_FIELDS_DDL =
  'create table if not exists public.model_fields (project text, field text, primary key (project, field))';

/** Which of `schemas` have column `col` on `items`. */
export async function schemasWithColumn(
  db: Querier,
  schemas: readonly string[],
  col: string,
): Promise<string[]> {
  const r = await db.query<{ s: string }>(
    `select table_schema as s from information_schema.columns
     where table_name = 'items' and column_name = $1 and table_schema = any($2) order by 1`,
    [col, schemas],
  );
  return r.rows.map((x) => x.s);
}

export async function indexesNamed(db: Querier, schemas: readonly string[], name: string): Promise<string[]> {
  const r = await db.query<{ s: string }>(
    'select schemaname as s from pg_indexes where indexname = $1 and schemaname = any($2) order by 1',
    [name, schemas],
  );
  return r.rows.map((x) => x.s);
}

export const addColumnRequest = z.object({ column: z.string().regex(/^[a-z_][a-z0-9_]*$/) });
export type AddColumnRequest = z.infer<typeof addColumnRequest>;

/** Where to inject a failure into the add-column operation. */
export interface Faults {
  base?: boolean;
  /** Tenant ids whose apply fails. */
  tenants?: ReadonlySet<string>;
  system?: boolean;
  cache?: boolean;
  /** Targets ('base' or tenant ids) whose compensation fails. */
  compensate?: ReadonlySet<string>;
  /** Extra delay per tenant apply, ms (server side, pg_sleep). */
  tenantSleepMs?: number;
}

export interface Calls {
  apply: string[];
  compensate: string[];
  system: number;
  cache: number;
  afterCommit: Array<{ physical: boolean; flagFromAls: boolean }>;
}

export function newCalls(): Calls {
  return { apply: [], compensate: [], system: 0, cache: 0, afterCommit: [] };
}

/**
 * The operation the tests run: adds a column and an index to `items` in the target schema. The
 * `faults` object is read at call time, so a test can inject or heal failures between calls.
 */
export function addColumnHandler(
  faults: Faults,
  calls: Calls,
  physicalDdlRequired: () => boolean,
): OperationHandler<AddColumnRequest> {
  const name = (t: { kind: 'base' } | { kind: 'tenant'; tenant: string }) =>
    t.kind === 'base' ? 'base' : t.tenant;
  return {
    request: addColumnRequest,
    async applyDdl({ tx, target, request }) {
      const who = name(target);
      calls.apply.push(who);
      if (target.kind === 'tenant' && faults.tenantSleepMs) {
        await tx.exec('select pg_sleep($1)', [faults.tenantSleepMs / 1000]);
      }
      await tx.exec(`alter table items add column if not exists ${q(request.column)} text`);
      await tx.exec(
        `create index if not exists ${q(`items_${request.column}_idx`)} on items (${q(request.column)})`,
      );
      if (target.kind === 'base' && faults.base) throw new Error('injected base failure');
      if (target.kind === 'tenant' && faults.tenants?.has(target.tenant)) {
        throw new Error(`injected failure on ${target.tenant}`);
      }
    },
    async compensate({ tx, target, request }) {
      const who = name(target);
      calls.compensate.push(who);
      if (faults.compensate?.has(who)) throw new Error(`injected compensation failure on ${who}`);
      await tx.exec(`drop index if exists ${q(`items_${request.column}_idx`)}`);
      await tx.exec(`alter table items drop column if exists ${q(request.column)}`);
    },
    async persistSystem({ tx, project, request }) {
      calls.system++;
      await tx.exec('insert into public.model_fields values ($1, $2) on conflict do nothing', [
        project,
        request.column,
      ]);
      if (faults.system) throw new Error('injected system failure');
    },
    async refreshCache() {
      calls.cache++;
      if (faults.cache) throw new Error('injected cache failure');
    },
    afterCommit({ physicalDdlRequired: physical }) {
      calls.afterCommit.push({ physical, flagFromAls: physicalDdlRequired() });
    },
  };
}

export interface ProjectFixture {
  project: string;
  tenants: string[];
  ops: SchemaOps;
  faults: Faults;
  calls: Calls;
}

/**
 * A fresh project (base schema + `n` tenant schemas) and a schemaops instance on it whose
 * `add_column` operation takes its faults and records its calls through the returned objects.
 */
export async function projectFixture(
  cluster: Cluster,
  project: string,
  n: number,
  options: Partial<Omit<SchemaOpsOptions, 'cluster' | 'tenants' | 'operations'>> = {},
): Promise<ProjectFixture> {
  const tenants = await createProjectSchemas(cluster, project, n);
  const faults: Faults = {};
  const calls = newCalls();
  const ops = createSchemaOps({
    cluster,
    tenants: schemaPerTenant({ cluster }),
    ...options,
    operations: { add_column: addColumnHandler(faults, calls, physicalDdlRequired) },
  });
  return { project, tenants, ops, faults, calls };
}

/** A fresh database on the shared test cluster and a dbx cluster on it; `modelFields` creates the model tables. */
export async function openTestDatabase(
  prefix: string,
  opts: { modelFields?: boolean } = {},
): Promise<{ db: TestDatabase; cluster: Cluster }> {
  const db = await createTestDatabase({ prefix });
  const cluster = testCluster(db.url);
  if (opts.modelFields) await cluster.exec(MODEL_FIELDS_DDL);
  return { db, cluster };
}

/** Closes what openTestDatabase opened (either may be missing when beforeAll failed). */
export async function closeTestDatabase(
  db: TestDatabase | undefined,
  cluster: Cluster | undefined,
): Promise<void> {
  await cluster?.close();
  await db?.drop();
}
