import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { Cluster } from '@x/dbx';
import { type TestDatabase, waitFor } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  isSchemaOpsError,
  MIGRATIONS,
  type Operation,
  physicalDdlRequired,
  type SchemaOps,
  type SchemaOpsEvent,
  schemaPerTenant,
  withPhysicalDdlRequired,
} from '../../src/index.js';
import {
  addColumnHandler,
  closeTestDatabase,
  createProjectSchemas,
  type Faults,
  indexesNamed,
  newCalls,
  openTestDatabase,
  type ProjectFixture,
  projectFixture,
  schemasWithColumn,
} from '../helpers.js';

const TENANTS = 60;

let db: TestDatabase;
let cluster: Cluster;

beforeAll(async () => {
  ({ db, cluster } = await openTestDatabase('schemaops_run', { modelFields: true }));
});
afterAll(() => closeTestDatabase(db, cluster));

let seq = 0;
interface Fixture extends ProjectFixture {
  events: SchemaOpsEvent[];
}

/** A fresh project (base schema + tenant schemas) and a schemaops instance on it. */
async function fixture(n = TENANTS, extra: { failFast?: boolean } = {}): Promise<Fixture> {
  const project = `p${++seq}_${Math.random().toString(36).slice(2, 6)}`;
  const { ops, ...rest } = await projectFixture(cluster, project, n, {
    concurrency: 6,
    lockWaitMs: 10_000,
    ...extra,
  });
  const events: SchemaOpsEvent[] = [];
  ops.on('step', (e) => events.push(e));
  ops.on('operation', (e) => events.push(e));
  return { ...rest, ops, events };
}

async function expectRejects(
  p: Promise<unknown>,
): Promise<Error & { code: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code: string; details: Record<string, unknown> };
  }
  throw new Error('expected a rejection');
}

function statesOf(op: Operation): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of op.steps.tenant_ddl) out[t.state] = (out[t.state] ?? 0) + 1;
  return out;
}

async function opOf(f: Fixture, e: { details: Record<string, unknown> }): Promise<Operation> {
  return f.ops.get(e.details.operationId as string);
}

describe('ledger migration', () => {
  it('upgrades a ledger left at an older version', async () => {
    const v1 = MIGRATIONS[0];
    if (!v1) throw new Error('no migrations');
    await cluster.exec(
      `create schema ledger_old;
       create table ledger_old.migrations (version integer primary key, name text not null, applied_at timestamptz not null default now());
       ${v1.sql('ledger_old')};
       insert into ledger_old.migrations (version, name) values (1, 'v1');`,
    );
    const ops = createSchemaOps({
      cluster,
      tenants: schemaPerTenant({ cluster }),
      ledgerSchema: 'ledger_old',
    });
    await ops.migrate();
    const versions = await cluster.query<{ version: number }>(
      'select version from ledger_old.migrations order by 1',
    );
    expect(versions.rows.map((r) => r.version)).toEqual(MIGRATIONS.map((m) => m.version));
    const ff = await cluster.queryRow<{ opts: string[] | null }>(
      `select reloptions as opts from pg_class where oid = 'ledger_old.steps'::regclass`,
    );
    expect(ff?.opts).toContain('fillfactor=70');
    await ops.close();
  });

  it('is idempotent and safe when many instances start at once', async () => {
    const instances = Array.from({ length: 4 }, () =>
      createSchemaOps({ cluster, tenants: schemaPerTenant({ cluster }), ledgerSchema: 'ledger_race' }),
    );
    await Promise.all(instances.map((i) => i.migrate()));
    await Promise.all(instances.map((i) => i.migrate()));
    const versions = await cluster.query<{ version: number }>('select version from ledger_race.migrations');
    expect(versions.rows.map((r) => r.version).sort()).toEqual(MIGRATIONS.map((m) => m.version));
    expect(MIGRATIONS.length).toBeGreaterThan(1);
    const cols = await cluster.query<{ column_name: string }>(
      `select column_name from information_schema.columns where table_schema = 'ledger_race' and table_name = 'operations'`,
    );
    expect(cols.rows.map((r) => r.column_name)).toEqual(
      expect.arrayContaining([
        'id',
        'project',
        'operation_type',
        'request',
        'status',
        'attempt_count',
        'last_error',
        'idempotency_key',
        'created_at',
        'updated_at',
      ]),
    );
    await Promise.all(instances.map((i) => i.close()));
  });
});

describe('run', () => {
  it('happy path: base, every tenant, system, cache, afterCommit with the physical-DDL flag', async () => {
    const f = await fixture();
    const channelEvents: unknown[] = [];
    const onMsg = (m: unknown) => channelEvents.push(m);
    subscribe('x:schemaops:operation', onMsg);
    try {
      const op = await withPhysicalDdlRequired(true, () =>
        f.ops.run({ project: f.project, type: 'add_column', request: { column: 'color' } }),
      );
      expect(op.status).toBe('committed');
      expect(op.attemptCount).toBe(1);
      expect(op.physicalDdlRequired).toBe(true);
      expect(op.steps.base_project_ddl.state).toBe('succeeded');
      expect(op.steps.tenant_ddl).toHaveLength(TENANTS);
      expect(statesOf(op)).toEqual({ succeeded: TENANTS });
      expect(op.steps.system_schema.state).toBe('succeeded');
      expect(op.steps.cache.state).toBe('succeeded');
      expect(op.lastError).toBeNull();
      expect(op.finishedAt).not.toBeNull();
      const all = [f.project, ...f.tenants];
      expect(await schemasWithColumn(cluster, all, 'color')).toEqual([...all].sort());
      expect(await indexesNamed(cluster, all, 'items_color_idx')).toHaveLength(all.length);
      expect(f.calls.apply).toHaveLength(TENANTS + 1);
      expect(f.calls.apply[0]).toBe('base');
      expect(f.calls.afterCommit).toEqual([{ physical: true, flagFromAls: true }]);
      // One step event per target, an operation event, and metrics that agree.
      const stepEvents = f.events.filter((e) => e.type === 'step' && e.step === 'tenant_ddl');
      expect(stepEvents).toHaveLength(TENANTS);
      expect(f.events.at(-1)).toMatchObject({ type: 'operation', status: 'committed', operationId: op.id });
      expect(channelEvents).toHaveLength(1);
      const m = f.ops.metrics();
      expect(m.operations.committed).toBe(1);
      expect(m.steps.tenant_ddl.succeeded).toBe(TENANTS);
      expect(m.lock.acquired).toBe(1);
      const fields = await cluster.query('select * from public.model_fields where project = $1', [f.project]);
      expect(fields.rowCount).toBe(1);
    } finally {
      unsubscribe('x:schemaops:operation', onMsg);
      await f.ops.close();
    }
  });

  it('a failure in the base DDL → failed, no tenant touched, nothing to compensate', async () => {
    const f = await fixture(55);
    f.faults.base = true;
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c1' } }),
    );
    expect(isSchemaOpsError(e, 'SCHEMAOPS_STEP_FAILED')).toBe(true);
    expect(e.details).toMatchObject({ step: 'base_project_ddl', status: 'failed' });
    const op = await opOf(f, e);
    expect(op.status).toBe('failed');
    expect(op.steps.base_project_ddl.state).toBe('failed');
    expect(op.steps.base_project_ddl.error).toContain('injected base failure');
    expect(statesOf(op)).toEqual({ pending: 55 });
    expect(op.lastError).toContain('injected base failure');
    expect(f.calls.apply).toEqual(['base']);
    expect(f.calls.compensate).toEqual([]);
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c1')).toEqual([]);
    await f.ops.close();
  });

  for (const k of [0, 17, 54]) {
    it(`a failure at tenant ${k} of 55 → base and every succeeded tenant compensated, status compensated`, async () => {
      const f = await fixture(55);
      const bad = f.tenants[k] as string;
      f.faults.tenants = new Set([bad]);
      const e = await expectRejects(
        f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c2' } }),
      );
      expect(e.code).toBe('SCHEMAOPS_STEP_FAILED');
      expect(e.details).toMatchObject({ step: 'tenant_ddl', tenant: bad, status: 'compensated' });
      const op = await opOf(f, e);
      expect(op.status).toBe('compensated');
      expect(op.direction).toBe('backward');
      expect(op.lastError).toContain(`injected failure on ${bad}`);
      expect(op.compensationError).toBeNull();
      expect(op.steps.base_project_ddl.state).toBe('compensated');
      const badStep = op.steps.tenant_ddl.find((t) => t.tenant === bad);
      expect(badStep?.state).toBe('failed');
      const states = statesOf(op);
      expect(states.failed).toBe(1);
      expect(states.succeeded ?? 0).toBe(0);
      // Every tenant that had succeeded was compensated; those never started stay pending.
      const compensatedTenants = op.steps.tenant_ddl
        .filter((t) => t.state === 'compensated')
        .map((t) => t.tenant);
      expect(new Set(f.calls.compensate)).toEqual(new Set(['base', ...compensatedTenants]));
      expect((states.compensated ?? 0) + (states.pending ?? 0) + 1).toBe(55);
      expect(f.calls.compensate[0]).toBe('base');
      expect(op.steps.system_schema.state).toBe('pending');
      expect(f.calls.system).toBe(0);
      expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c2')).toEqual([]);
      expect(await indexesNamed(cluster, [f.project, ...f.tenants], 'items_c2_idx')).toEqual([]);
      await f.ops.close();
    });
  }

  it('without failFast every tenant is attempted and all failures are recorded', async () => {
    const f = await fixture(52, { failFast: false });
    f.faults.tenants = new Set([f.tenants[3] as string, f.tenants[40] as string]);
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c3' } }),
    );
    const op = await opOf(f, e);
    expect(op.status).toBe('compensated');
    expect(statesOf(op)).toEqual({ failed: 2, compensated: 50 });
    expect(await schemasWithColumn(cluster, f.tenants, 'c3')).toEqual([]);
    await f.ops.close();
  });

  it('a failure in the system step → every tenant and the base compensated', async () => {
    const f = await fixture(53);
    f.faults.system = true;
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c4' } }),
    );
    expect(e.details).toMatchObject({ step: 'system_schema', status: 'compensated' });
    const op = await opOf(f, e);
    expect(op.status).toBe('compensated');
    expect(op.steps.system_schema.state).toBe('failed');
    expect(statesOf(op)).toEqual({ compensated: 53 });
    expect(op.steps.base_project_ddl.state).toBe('compensated');
    // The system transaction rolled back with the failure: no metadata row.
    const fields = await cluster.query('select 1 from public.model_fields where project = $1', [f.project]);
    expect(fields.rowCount).toBe(0);
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c4')).toEqual([]);
    await f.ops.close();
  });

  it('a cache failure → needs_repair, nothing undone; reconcile re-runs only the cache step', async () => {
    const f = await fixture(51);
    f.faults.cache = true;
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c5' } }),
    );
    expect(e.code).toBe('SCHEMAOPS_STEP_FAILED');
    expect(e.details).toMatchObject({ step: 'cache', status: 'needs_repair' });
    const id = e.details.operationId as string;
    let op = await f.ops.get(id);
    expect(op.status).toBe('needs_repair');
    expect(op.direction).toBe('forward');
    expect(op.steps.cache.state).toBe('failed');
    expect(statesOf(op)).toEqual({ succeeded: 51 });
    expect(f.calls.compensate).toEqual([]);
    expect(await schemasWithColumn(cluster, f.tenants, 'c5')).toHaveLength(51);
    expect((await f.ops.listRepairable(f.project)).map((o) => [o.id, o.projectLocked])).toEqual([
      [id, false],
    ]);

    f.faults.cache = false;
    const applyCalls = f.calls.apply.length;
    op = await f.ops.reconcile(id);
    expect(op.id).toBe(id);
    expect(op.status).toBe('committed');
    expect(op.attemptCount).toBe(2);
    expect(op.steps.cache.state).toBe('succeeded');
    expect(op.steps.cache.attempts).toBe(2);
    expect(op.steps.tenant_ddl.every((t) => t.attempts === 1)).toBe(true);
    expect(f.calls.apply.length).toBe(applyCalls);
    expect(f.calls.system).toBe(1);
    expect(f.calls.afterCommit).toHaveLength(1);
    expect(await f.ops.listRepairable(f.project)).toEqual([]);
    // A second reconcile of a committed operation changes nothing.
    expect((await f.ops.reconcile(id)).attemptCount).toBe(2);
    await f.ops.close();
  });

  it('a failed compensation → needs_repair with both errors kept; reconcile finishes the compensation', async () => {
    const f = await fixture(50);
    const bad = f.tenants[30] as string;
    f.faults.tenants = new Set([bad]);
    // Fail compensation of the first tenant (which certainly succeeded before tenant 30 failed).
    const stuck = f.tenants[0] as string;
    f.faults.compensate = new Set([stuck]);
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c6' } }),
    );
    expect(e.code).toBe('SCHEMAOPS_COMPENSATION_FAILED');
    expect(e.details).toMatchObject({ status: 'needs_repair', step: 'tenant_ddl', tenant: bad });
    const id = e.details.operationId as string;
    let op = await f.ops.get(id);
    expect(op.status).toBe('needs_repair');
    expect(op.direction).toBe('backward');
    expect(op.lastError).toContain(`injected failure on ${bad}`);
    expect(op.compensationError).toContain(`injected compensation failure on ${stuck}`);
    const stuckStep = op.steps.tenant_ddl.find((t) => t.tenant === stuck);
    expect(stuckStep).toMatchObject({ state: 'succeeded' });
    expect(stuckStep?.error).toContain('compensation:');
    expect(await schemasWithColumn(cluster, f.tenants, 'c6')).toEqual([stuck]);

    f.faults.compensate = new Set();
    f.faults.tenants = new Set();
    const before = f.calls.compensate.length;
    op = await f.ops.reconcile(id);
    expect(op.status).toBe('compensated');
    expect(op.attemptCount).toBe(2);
    expect(op.compensationError).toBeNull();
    expect(op.lastError).toContain(`injected failure on ${bad}`);
    // Only the tenant still applied was compensated again; no forward step re-ran.
    expect(f.calls.compensate.slice(before)).toEqual([stuck]);
    expect(await schemasWithColumn(cluster, f.tenants, 'c6')).toEqual([]);
    await f.ops.close();
  });

  it('a failed base compensation is reported, the tenants are still compensated', async () => {
    const f = await fixture(50);
    f.faults.system = true;
    f.faults.compensate = new Set(['base']);
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c7' } }),
    );
    expect(e.code).toBe('SCHEMAOPS_COMPENSATION_FAILED');
    const op = await opOf(f, e);
    expect(op.status).toBe('needs_repair');
    expect(op.steps.base_project_ddl.state).toBe('succeeded');
    expect(statesOf(op)).toEqual({ compensated: 50 });
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c7')).toEqual([f.project]);
    await f.ops.close();
  });

  it('with skipBaseDdl the base is never touched; a tenant failure compensates the tenants', async () => {
    const f = await fixture(50);
    f.faults.tenants = new Set([f.tenants[25] as string]);
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c8' }, skipBaseDdl: true }),
    );
    const op = await opOf(f, e);
    expect(op.skipBaseDdl).toBe(true);
    expect(op.status).toBe('compensated');
    expect(f.calls.apply).not.toContain('base');
    expect(f.calls.compensate).not.toContain('base');
    expect(await schemasWithColumn(cluster, f.tenants, 'c8')).toEqual([]);
    await f.ops.close();
  });

  it('an operation without a compensate callback ends needs_repair, not failed', async () => {
    const f = await fixture(50);
    const { compensate: _drop, ...noUndo } = addColumnHandler(f.faults, f.calls, physicalDdlRequired);
    f.faults.tenants = new Set([f.tenants[20] as string]);
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c9' }, handler: noUndo }),
    );
    expect(e.code).toBe('SCHEMAOPS_COMPENSATION_FAILED');
    const op = await opOf(f, e);
    expect(op.status).toBe('needs_repair');
    expect(op.compensationError).toContain('no compensate callback');
    await f.ops.close();
  });

  it('an abort mid fan-out stops starting tenants, compensates, and rejects with the reason', async () => {
    const f = await fixture(50);
    f.faults.tenantSleepMs = 20;
    const ac = new AbortController();
    let done = 0;
    f.ops.on('step', (e) => {
      if (e.step === 'tenant_ddl' && e.state === 'succeeded' && ++done === 10)
        ac.abort(new Error('stop now'));
    });
    const e = await expectRejects(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'c10' }, signal: ac.signal }),
    );
    expect(e.message).toBe('stop now');
    const [row] = await f.ops.list({ project: f.project });
    const op = await f.ops.get(row?.id as string);
    expect(op.status).toBe('compensated');
    expect(statesOf(op).pending).toBeGreaterThan(0);
    expect(await schemasWithColumn(cluster, [f.project, ...f.tenants], 'c10')).toEqual([]);
    await f.ops.close();
  });
});

describe('idempotency', () => {
  it('a repeated key returns the first operation without re-running it', async () => {
    const f = await fixture(50);
    const input = {
      project: f.project,
      type: 'add_column',
      request: { column: 'k1' },
      idempotencyKey: 'req-1',
    };
    const a = await f.ops.run(input);
    const applied = f.calls.apply.length;
    const b = await f.ops.run(input);
    expect(b.id).toBe(a.id);
    expect(b.status).toBe('committed');
    expect(f.calls.apply.length).toBe(applied);
    expect(f.ops.metrics().operations.deduplicated).toBe(1);
    // Concurrent repeats: one operation, one application.
    const many = await Promise.all(
      Array.from({ length: 3 }, () =>
        f.ops.run({ ...input, idempotencyKey: 'req-2', request: { column: 'k2' } }),
      ),
    );
    expect(new Set(many.map((o) => o.id)).size).toBe(1);
    expect(f.calls.apply.length).toBe(applied + 51);
    // The same key with another request is refused.
    const e = await expectRejects(f.ops.run({ ...input, request: { column: 'other' } }));
    expect(e.code).toBe('SCHEMAOPS_IDEMPOTENCY_CONFLICT');
    const rows = await cluster.query('select 1 from schemaops.operations where project = $1', [f.project]);
    expect(rows.rowCount).toBe(2);
    await f.ops.close();
  });

  it('a repeated key of a failed operation replays its outcome', async () => {
    const f = await fixture(50);
    f.faults.tenants = new Set([f.tenants[5] as string]);
    const input = {
      project: f.project,
      type: 'add_column',
      request: { column: 'k3' },
      idempotencyKey: 'req-3',
    };
    const first = await expectRejects(f.ops.run(input));
    f.faults.tenants = new Set();
    const again = await expectRejects(f.ops.run(input));
    expect(again.code).toBe('SCHEMAOPS_STEP_FAILED');
    expect(again.details).toMatchObject({
      operationId: first.details.operationId,
      status: 'compensated',
      replayed: true,
    });
    await f.ops.close();
  });
});

describe('serialisation per project', () => {
  it('concurrent operations on one project never overlap, across instances; other projects run alongside', async () => {
    const f = await fixture(50);
    const other = await fixture(50);
    const second = createSchemaOps({
      cluster,
      tenants: schemaPerTenant({ cluster }),
      concurrency: 6,
      operations: { add_column: addColumnHandler(f.faults, f.calls, physicalDdlRequired) },
    });
    let active = 0;
    let maxActive = 0;
    const spans: Array<[number, number]> = [];
    const track = (ops: SchemaOps) =>
      ops.on('operation', () => {
        active--;
      });
    track(f.ops);
    track(second);
    const run = async (ops: SchemaOps, column: string) => {
      const op = await ops.run({
        project: f.project,
        type: 'add_column',
        request: { column },
        handler: {
          ...addColumnHandler(f.faults, f.calls, physicalDdlRequired),
          async persistSystem() {
            active++;
            maxActive = Math.max(maxActive, active);
            // the subject: each holds its step a while, so operations that were not serialised would overlap here
            await new Promise((r) => setTimeout(r, 30));
          },
        },
      });
      spans.push([op.createdAt.getTime(), op.finishedAt?.getTime() ?? 0]);
      return op;
    };
    const results = await Promise.all([
      run(f.ops, 's1'),
      run(second, 's2'),
      run(f.ops, 's3'),
      run(second, 's4'),
      other.ops.run({ project: other.project, type: 'add_column', request: { column: 's5' } }),
    ]);
    expect(results.every((r) => r.status === 'committed')).toBe(true);
    expect(maxActive).toBe(1);
    // Ledger timestamps agree: one project's operations do not overlap in time.
    spans.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++)
      expect(spans[i]?.[0]).toBeGreaterThanOrEqual(spans[i - 1]?.[1] as number);
    await second.close();
    await other.ops.close();
    await f.ops.close();
  });

  it('SCHEMAOPS_LOCKED when the project lock is not free within lockWaitMs', async () => {
    const f = await fixture(50);
    f.faults.tenantSleepMs = 10;
    const impatient = createSchemaOps({
      cluster,
      tenants: schemaPerTenant({ cluster }),
      lockWaitMs: 50,
      operations: { add_column: addColumnHandler({}, newCalls(), physicalDdlRequired) },
    });
    let started!: () => void;
    const isRunning = new Promise<void>((r) => {
      started = r;
    });
    f.ops.on('step', () => started());
    const slow = f.ops.run({ project: f.project, type: 'add_column', request: { column: 'l1' } });
    await isRunning;
    const e = await expectRejects(
      impatient.run({ project: f.project, type: 'add_column', request: { column: 'l2' } }),
    );
    expect(e.code).toBe('SCHEMAOPS_LOCKED');
    expect((e as unknown as { retryable: boolean }).retryable).toBe(true);
    expect((await slow).status).toBe('committed');
    expect(impatient.metrics().lock.timeouts).toBe(1);
    await impatient.close();
    await f.ops.close();
  });
});

describe('waiting for the project lock', () => {
  it('an abort while waiting ends the wait at once and leaves no ledger row', async () => {
    const f = await fixture(50);
    f.faults.tenantSleepMs = 40;
    let started!: () => void;
    const isRunning = new Promise<void>((r) => {
      started = r;
    });
    f.ops.on('step', () => started());
    let slowDone = false;
    const slow = f.ops.run({ project: f.project, type: 'add_column', request: { column: 'aw1' } });
    void slow.then(() => {
      slowDone = true;
    });
    await isRunning;
    const ac = new AbortController();
    const waiting = f.ops.run({
      project: f.project,
      type: 'add_column',
      request: { column: 'aw2' },
      signal: ac.signal,
    });
    // Abort once the second run is blocked on the project's advisory lock.
    await waitFor(
      async () =>
        ((
          await cluster.queryRow<{ n: number }>(
            `select count(*)::int as n from pg_locks
             where locktype = 'advisory' and not granted
               and database = (select oid from pg_database where datname = current_database())`,
          )
        )?.n ?? 0) >= 1,
      { timeoutMs: 10_000, what: 'the second run waiting for the lock' },
    );
    ac.abort(new Error('gave up waiting'));
    await expect(waiting).rejects.toThrow('gave up waiting');
    // It gave up while the lock holder was still running (not when the lock came free).
    expect(slowDone).toBe(false);
    expect((await slow).status).toBe('committed');
    expect((await f.ops.list({ project: f.project })).map((o) => o.status)).toEqual(['committed']);
    // The lock is free again: the next run goes through.
    f.faults.tenantSleepMs = 0;
    expect(
      (await f.ops.run({ project: f.project, type: 'add_column', request: { column: 'aw3' } })).status,
    ).toBe('committed');
    await f.ops.close();
  });
});

describe('lifecycle and inputs', () => {
  it('rejects bad input, unknown operations, and calls after close', async () => {
    const f = await fixture(1);
    await expect(
      f.ops.run({ project: '', type: 'add_column', request: { column: 'x' } }),
    ).rejects.toMatchObject({
      code: 'SCHEMAOPS_INVALID_INPUT',
    });
    await expect(f.ops.run({ project: f.project, type: 'nope', request: {} })).rejects.toMatchObject({
      code: 'SCHEMAOPS_UNKNOWN_OPERATION',
    });
    await expect(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'Bad Name' } }),
    ).rejects.toMatchObject({ code: 'SCHEMAOPS_INVALID_INPUT' });
    await expect(f.ops.get('00000000-0000-0000-0000-000000000000')).rejects.toMatchObject({
      code: 'SCHEMAOPS_NOT_FOUND',
    });
    await expect(
      cluster.runTx(() => f.ops.run({ project: f.project, type: 'add_column', request: { column: 'x' } })),
    ).rejects.toMatchObject({ code: 'SCHEMAOPS_INVALID_INPUT' });
    const ac = new AbortController();
    ac.abort(new Error('before start'));
    await expect(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'x' }, signal: ac.signal }),
    ).rejects.toThrow('before start');
    await f.ops.close();
    await f.ops.close();
    await expect(
      f.ops.run({ project: f.project, type: 'add_column', request: { column: 'x' } }),
    ).rejects.toMatchObject({
      code: 'SCHEMAOPS_CLOSED',
    });
  });

  it('logs through a pino-compatible logger, without request values', async () => {
    const project = `log${++seq}`;
    const tenants = await createProjectSchemas(cluster, project, 3);
    const logs: Array<{ level: string; obj: object; msg: string | undefined }> = [];
    const logger = {
      debug: (obj: object, msg?: string) => logs.push({ level: 'debug', obj, msg }),
      info: (obj: object, msg?: string) => logs.push({ level: 'info', obj, msg }),
      warn: (obj: object, msg?: string) => logs.push({ level: 'warn', obj, msg }),
      error: (obj: object, msg?: string) => logs.push({ level: 'error', obj, msg }),
    };
    const faults: Faults = {};
    const ops = createSchemaOps({
      cluster,
      tenants: schemaPerTenant({ cluster }),
      logger,
      operations: { add_column: addColumnHandler(faults, newCalls(), physicalDdlRequired) },
    });
    await ops.run({ project, type: 'add_column', request: { column: 'secret_a' } });
    faults.tenants = new Set([tenants[1] as string]);
    await ops.run({ project, type: 'add_column', request: { column: 'secret_b' } }).catch(() => {});
    expect(logs.map((l) => [l.level, l.msg])).toEqual([
      ['info', 'schemaops operation committed'],
      ['warn', 'schemaops operation ended compensated'],
    ]);
    expect(JSON.stringify(logs)).not.toContain('secret_');
    await ops.close();
  });

  it('close waits for an operation in flight', async () => {
    const f = await fixture(50);
    f.faults.tenantSleepMs = 5;
    // close() right after run(), before run has done any I/O: the run is accepted and waited for.
    const p = f.ops.run({ project: f.project, type: 'add_column', request: { column: 'w1' } });
    await f.ops.close();
    expect(f.ops.metrics().running).toBe(0);
    expect((await p).status).toBe('committed');
  });
});
