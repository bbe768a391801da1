import type { Cluster } from '@x/dbx';
import type { TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  isSchemaOpsError,
  type OperationHandler,
  type SchemaOps,
  schemaPerTenant,
} from '../../src/index.js';
import { quoteLiteral } from '../../src/internal/sql.js';
import {
  type AddColumnRequest,
  addColumnRequest,
  closeTestDatabase,
  createProjectSchemas,
  indexesNamed,
  openTestDatabase,
  q,
  schemasWithColumn,
} from '../helpers.js';

let db: TestDatabase;
let cluster: Cluster;

beforeAll(async () => {
  ({ db, cluster } = await openTestDatabase('schemaops_sql'));
});
afterAll(() => closeTestDatabase(db, cluster));

/** add_column as SQL text; `failOn` tenants get SQL that fails (a column that does not exist). */
function sqlHandler(failOn: ReadonlySet<string>, applied: string[]): OperationHandler<AddColumnRequest> {
  return {
    request: addColumnRequest,
    applySql: ({ target, request, schema }) => {
      applied.push(schema ?? '');
      const bad = target.kind === 'tenant' && failOn.has(target.tenant);
      return `alter table items add column if not exists ${q(request.column)} text;
        create index if not exists ${q(`items_${request.column}_idx`)} on items (${q(bad ? 'nope' : request.column)})`;
    },
    compensateSql: ({ request }) =>
      `drop index if exists ${q(`items_${request.column}_idx`)};
       alter table items drop column if exists ${q(request.column)}`,
  };
}

let seq = 0;
async function fixture(
  n: number,
  failOn: ReadonlySet<string> = new Set(),
  extraTenants: string[] = [],
): Promise<{ project: string; tenants: string[]; ops: SchemaOps; applied: string[] }> {
  const project = `s${++seq}_${Math.random().toString(36).slice(2, 6)}`;
  const tenants = await createProjectSchemas(cluster, project, n);
  for (const t of extraTenants) {
    await cluster.exec(`create schema ${q(t)}; create table ${q(t)}.items (id int primary key, label text)`);
  }
  const all = [...tenants, ...extraTenants].sort();
  const applied: string[] = [];
  const ops = createSchemaOps({
    cluster,
    tenants: schemaPerTenant({ cluster, listTenants: async () => all }),
    concurrency: 4,
    operations: { add_column: sqlHandler(failOn, applied) },
  });
  return { project, tenants: all, ops, applied };
}

describe('DDL as SQL text (applySql / compensateSql)', () => {
  it('applies to every tenant in one query each, records each tenant, and folds the journal into steps', async () => {
    // Tenant ids that need quoting both as identifiers and as literals in the ledger record.
    const f = await fixture(52, new Set(), [`s_odd_tenant_o'k\\x`, 's_odd_tenant_"q"']);
    const op = await f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c1' } });
    expect(op.status).toBe('committed');
    expect(op.steps.tenant_ddl).toHaveLength(54);
    expect(op.steps.tenant_ddl.every((t) => t.state === 'succeeded' && t.attempts === 1)).toBe(true);
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c1')).toHaveLength(55);
    expect(await indexesNamed(cluster, f.tenants, 'items_c1_idx')).toHaveLength(54);
    // The callback saw each target's schema (the search_path is set to it as well).
    expect([...f.applied].sort()).toEqual([f.project, ...f.tenants].sort());
    const rows = await cluster.query<{ tenant: string; state: string; attempts: number }>(
      `select tenant, state, attempts from schemaops.steps where operation_id = $1 and step = 'tenant_ddl'`,
      [op.id],
    );
    expect(rows.rows.map((r) => r.tenant).sort()).toEqual(f.tenants);
    expect(rows.rows.every((r) => r.state === 'succeeded' && r.attempts === 1)).toBe(true);
    const left = await cluster.queryRow<{ n: number }>(
      'select count(*)::int as n from schemaops.tenant_events where operation_id = $1',
      [op.id],
    );
    expect(left?.n).toBe(0);
    await f.ops.close();
  });

  it('a failing tenant rolls back alone; the others are compensated with compensateSql', async () => {
    const failOn = new Set<string>();
    const f = await fixture(50, failOn);
    const bad = f.tenants[17] as string;
    failOn.add(bad);
    const ops = f.ops;
    const err = await ops
      .run({ project: f.project, type: 'add_column', request: { column: 'c2' } })
      .catch((e: unknown) => e);
    expect(isSchemaOpsError(err, 'SCHEMAOPS_STEP_FAILED')).toBe(true);
    const op = await ops.get((err as { details: { operationId: string } }).details.operationId);
    expect(op.status).toBe('compensated');
    const byState = (s: string) => op.steps.tenant_ddl.filter((t) => t.state === s).map((t) => t.tenant);
    expect(byState('failed')).toEqual([bad]);
    expect(byState('succeeded')).toEqual([]);
    expect(op.steps.tenant_ddl.find((t) => t.tenant === bad)?.error).toMatch(/nope/);
    expect(op.steps.base_project_ddl.state).toBe('compensated');
    // Nothing of the failed tenant's transaction is left (its column came before the failing index).
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c2')).toEqual([]);
    await ops.close();
  });

  it('refuses SQL text with transaction control before running any of it, and compensates', async () => {
    const f = await fixture(3);
    f.ops.define('sneaky_commit', {
      request: addColumnRequest,
      applySql: ({ request, target }) =>
        target.kind === 'tenant'
          ? `alter table items add column if not exists ${q(request.column)} text; commit;
             create index if not exists ${q(`items_${request.column}_idx`)} on items (${q(request.column)})`
          : `alter table items add column if not exists ${q(request.column)} text`,
      compensateSql: ({ request }) => `alter table items drop column if exists ${q(request.column)}`,
    });
    const err = await f.ops
      .run({ project: f.project, type: 'sneaky_commit', request: { column: 'c9' } })
      .catch((e: unknown) => e);
    expect(isSchemaOpsError(err, 'SCHEMAOPS_STEP_FAILED')).toBe(true);
    const op = await f.ops.get((err as { details: { operationId: string } }).details.operationId);
    expect(op.status).toBe('compensated');
    expect(op.steps.tenant_ddl.every((t) => t.state === 'failed')).toBe(true);
    expect(op.steps.tenant_ddl[0]?.error).toMatch(
      /must not contain transaction control \(COMMIT in statement 2\)/,
    );
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c9')).toEqual([]);
    await f.ops.close();
  });

  it('reads a tenant state still in the journal (not folded, e.g. after a crash) over its steps row', async () => {
    const f = await fixture(3);
    const op = await f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c3' } });
    const t = f.tenants[1] as string;
    await cluster.exec(
      `insert into schemaops.tenant_events (operation_id, tenant, state, error, counts_attempt)
       values ($1, $2, 'failed', 'boom', true), ($1, $2, 'compensated', null, false)`,
      [op.id, t],
    );
    const seen = await f.ops.get(op.id);
    const entry = seen.steps.tenant_ddl.find((x) => x.tenant === t);
    expect(entry).toMatchObject({ state: 'compensated', error: null, attempts: 2 });
    expect(seen.steps.tenant_ddl.filter((x) => x.state === 'succeeded')).toHaveLength(2);
    await f.ops.close();
  });

  it('rejects a handler with both applyDdl and applySql, or neither, and a non-string applySql result', async () => {
    const f = await fixture(2);
    const both = { applyDdl: async () => {}, applySql: () => 'select 1' };
    expect(() => f.ops.define('both', both)).toThrow(/one of them/);
    expect(() => f.ops.define('neither', {} as OperationHandler)).toThrow(/applyDdl or an applySql/);
    expect(() =>
      createSchemaOps({ cluster, tenants: schemaPerTenant({ cluster }), operations: { both } }),
    ).toThrow(expect.objectContaining({ code: 'SCHEMAOPS_INVALID_OPTIONS' }));
    f.ops.define('bad', { applySql: () => 42 as unknown as string });
    const err = await f.ops
      .run({ project: f.project, type: 'bad', request: {} })
      .catch((e: unknown) => e as { code: string; details: { status: string } });
    expect(err).toMatchObject({ code: 'SCHEMAOPS_STEP_FAILED', details: { status: 'failed' } });
    await f.ops.close();
  });
});

describe('quoteLiteral', () => {
  it('round-trips through PostgreSQL whatever standard_conforming_strings says', async () => {
    const values = [`it's`, `back\\slash`, `both\\'\\\\''`, 'ünïcödé ✓', '', `E'x'`, '$$', 'line\nbreak'];
    for (const scs of ['on', 'off']) {
      const r = await cluster.query<{ v: string }>(
        `set standard_conforming_strings = ${scs}; select ${values.map((v, i) => `${quoteLiteral(v)} as v${i}`).join(', ')}`,
      );
      expect(Object.values(r.rows[0] ?? {})).toEqual(values);
    }
    await cluster.exec('set standard_conforming_strings = on');
    expect(() => quoteLiteral('nul\u0000')).toThrow(TypeError);
  });
});
