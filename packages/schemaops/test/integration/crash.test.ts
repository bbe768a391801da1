import { fileURLToPath } from 'node:url';
import type { Cluster } from '@x/dbx';
import { spawnNode, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  type Operation,
  physicalDdlRequired,
  type SchemaOps,
  type SchemaOpsEvent,
  schemaPerTenant,
} from '../../src/index.js';
import {
  addColumnHandler,
  type Calls,
  closeTestDatabase,
  createProjectSchemas,
  type Faults,
  newCalls,
  openTestDatabase,
  schemasWithColumn,
} from '../helpers.js';

const CHILD = fileURLToPath(new URL('../fixtures/crash-child.ts', import.meta.url));
const TENANTS = 60;

let db: TestDatabase;
let cluster: Cluster;

beforeAll(async () => {
  ({ db, cluster } = await openTestDatabase('schemaops_crash', { modelFields: true }));
});
afterAll(() => closeTestDatabase(db, cluster));

/** Starts the child on a fresh project, SIGKILLs it after `killAfter` tenants, returns the ledger row. */
async function crashMidFanOut(
  project: string,
  column: string,
  killAfter: number,
): Promise<{ op: Operation; tenants: string[] }> {
  const tenants = await createProjectSchemas(cluster, project, TENANTS);
  const child = spawnNode(CHILD, [], {
    env: { DATABASE_URL: db.url, PROJECT: project, COLUMN: column, TENANT_SLEEP_MS: '40' },
  });
  const line = await child
    .waitForLine(new RegExp(`^tenant-done \\S+ ${killAfter}$`), 30_000)
    .catch((e: unknown) => {
      throw new Error(`child failed: ${String(e)}\n${child.stderr}`);
    });
  child.kill('SIGKILL');
  const exit = await child.wait();
  expect(exit.signal).toBe('SIGKILL');
  const id = line.split(' ')[1] as string;
  const reader = createSchemaOps({ cluster, tenants: schemaPerTenant({ cluster }) });
  const op = await reader.get(id);
  await reader.close();
  return { op, tenants };
}

function fixtureOps(faults: Faults, calls: Calls): SchemaOps {
  return createSchemaOps({
    cluster,
    tenants: schemaPerTenant({ cluster }),
    concurrency: 6,
    lockWaitMs: 15_000,
    operations: { add_column: addColumnHandler(faults, calls, physicalDdlRequired) },
  });
}

describe('a process SIGKILLed mid fan-out', () => {
  it('leaves the row applying; reconcile resumes the same row and completes only the unfinished tenants', async () => {
    const { op: crashed, tenants } = await crashMidFanOut('crash_a', 'ca', 12);
    expect(crashed.status).toBe('applying');
    const doneBefore = crashed.steps.tenant_ddl.filter((t) => t.state === 'succeeded').map((t) => t.tenant);
    expect(doneBefore.length).toBeGreaterThanOrEqual(12);
    expect(doneBefore.length).toBeLessThan(TENANTS);
    // Tenant DDL and its ledger entry commit together: what the ledger says succeeded has the column.
    expect(await schemasWithColumn(cluster, tenants, 'ca')).toEqual(expect.arrayContaining(doneBefore));

    const calls = newCalls();
    const ops = fixtureOps({}, calls);
    expect((await ops.listRepairable('crash_a')).map((o) => o.id)).toEqual([crashed.id]);
    const op = await ops.reconcile(crashed.id);
    expect(op.id).toBe(crashed.id);
    expect(op.status).toBe('committed');
    expect(op.attemptCount).toBe(2);
    expect(op.steps.tenant_ddl.every((t) => t.state === 'succeeded')).toBe(true);
    // The base and the tenants finished before the crash were not run again.
    expect(calls.apply).not.toContain('base');
    expect(calls.apply.filter((t) => doneBefore.includes(t))).toEqual([]);
    expect(calls.apply).toHaveLength(TENANTS - doneBefore.length);
    expect(await schemasWithColumn(cluster, ['crash_a', ...tenants], 'ca')).toHaveLength(TENANTS + 1);
    const open = await cluster.query(
      `select 1 from schemaops.operations where status in ('applying', 'compensating')`,
    );
    expect(open.rowCount).toBe(0);
    await ops.close();
  });

  it('the background reconciler picks the dead operation up and compensates it when the rest cannot apply', async () => {
    const { op: crashed, tenants } = await crashMidFanOut('crash_b', 'cb', 8);
    expect(crashed.status).toBe('applying');
    const pending = crashed.steps.tenant_ddl.filter((t) => t.state === 'pending').map((t) => t.tenant);
    const calls = newCalls();
    // The last tenant now fails: the resumed run must undo everything, including pre-crash work.
    const ops = fixtureOps({ tenants: new Set([pending.at(-1) as string]) }, calls);
    const events: Array<Extract<SchemaOpsEvent, { type: 'reconcile' }>> = [];
    const settled = new Promise<void>((resolve) => {
      ops.on('reconcile', (e) => {
        events.push(e);
        if (e.operationId === crashed.id && e.outcome !== 'locked') resolve();
      });
    });
    const reconciler = ops.startReconciler({ intervalMs: 50, project: 'crash_b' });
    await settled;
    await reconciler.stop();
    expect(events.filter((e) => e.outcome !== 'locked').at(-1)).toMatchObject({
      outcome: 'compensated',
      status: 'compensated',
      attempt: 2,
    });
    const op = await ops.get(crashed.id);
    expect(op.status).toBe('compensated');
    expect(op.steps.base_project_ddl.state).toBe('compensated');
    expect(op.steps.tenant_ddl.some((t) => t.state === 'succeeded')).toBe(false);
    expect(await schemasWithColumn(cluster, ['crash_b', ...tenants], 'cb')).toEqual([]);
    expect(ops.metrics().reconcile.compensated).toBe(1);
    const open = await cluster.query(
      `select 1 from schemaops.operations where status in ('applying', 'compensating')`,
    );
    expect(open.rowCount).toBe(0);
    await ops.close();
  });
});

describe('losing the lock connection mid-operation', () => {
  it('stops with SCHEMAOPS_LOCK_LOST, leaves the row for a reconcile, which completes it', async () => {
    const project = 'lost_c';
    const tenants = await createProjectSchemas(cluster, project, 50);
    const calls = newCalls();
    const ops = fixtureOps({ tenantSleepMs: 20 }, calls);
    let done = 0;
    let killed: Promise<unknown> | null = null;
    ops.on('step', (e) => {
      if (e.step === 'tenant_ddl' && e.state === 'succeeded' && ++done === 5) {
        // Terminate the backend holding this project's advisory lock (as a network cut would).
        killed = cluster.query(
          `select pg_terminate_backend(pid) from pg_locks
           where locktype = 'advisory' and granted and objid = hashtext($1)::oid and objsubid = 2`,
          [project],
        );
      }
    });
    const e = await ops.run({ project, type: 'add_column', request: { column: 'lc' } }).then(
      () => null,
      (x: unknown) => x as { code: string },
    );
    expect(killed).not.toBeNull();
    await killed;
    expect(e?.code).toBe('SCHEMAOPS_LOCK_LOST');
    const [row] = await ops.listRepairable(project);
    expect(row?.status).toBe('applying');
    const op = await ops.reconcile(row?.id as string);
    expect(op.status).toBe('committed');
    expect(await schemasWithColumn(cluster, tenants, 'lc')).toHaveLength(50);
    await ops.close();
  });
});

describe('a process killed at each step boundary', () => {
  const boundaries = ['base', 'tenant:', 'system', 'cache', 'afterCommit'] as const;
  it('reconcile finishes the same row, running only what had not succeeded', async () => {
    const cases = await Promise.all(
      boundaries.map(async (where, i) => {
        const project = `boundary_${i}`;
        const tenants = await createProjectSchemas(cluster, project, 50);
        const crashAt = where === 'tenant:' ? `tenant:${tenants[30]}` : where;
        const child = spawnNode(CHILD, [], {
          env: {
            DATABASE_URL: db.url,
            PROJECT: project,
            COLUMN: 'bc',
            TENANT_SLEEP_MS: '0',
            CRASH_AT: crashAt,
          },
        });
        const exit = await child.wait();
        return { where, project, tenants, exit, stdout: await collect(child.lines), stderr: child.stderr };
      }),
    );
    const calls = newCalls();
    const ops = fixtureOps({}, calls);
    for (const c of cases) {
      expect(c.exit.signal, `${c.where}: ${c.stderr}`).toBe('SIGKILL');
      expect(c.stdout).toContain(`dying at ${c.where === 'tenant:' ? `tenant:${c.tenants[30]}` : c.where}`);
      const [summary] = await ops.list({ project: c.project });
      if (!summary) throw new Error(`${c.where}: no ledger row`);
      const crashed = await ops.get(summary.id);
      if (c.where === 'afterCommit') {
        // Committed before the hook ran: nothing to repair (afterCommit is at most once).
        expect(crashed.status).toBe('committed');
        expect(await ops.listRepairable(c.project)).toEqual([]);
        continue;
      }
      expect(crashed.status).toBe('applying');
      const succeededBefore = new Set(
        crashed.steps.tenant_ddl.filter((t) => t.state === 'succeeded').map((t) => t.tenant),
      );
      calls.apply.length = 0;
      calls.system = 0;
      calls.cache = 0;
      const op = await ops.reconcile(crashed.id);
      expect(op.id).toBe(crashed.id);
      expect(op.status, c.where).toBe('committed');
      expect(op.attemptCount).toBe(2);
      expect(calls.apply.filter((t) => succeededBefore.has(t))).toEqual([]);
      expect(calls.apply.includes('base')).toBe(c.where === 'base');
      expect(calls.system).toBe(c.where === 'cache' ? 0 : 1);
      expect(calls.cache).toBe(1);
      if (c.where === 'system' || c.where === 'cache') expect(calls.apply).toEqual([]);
      expect(await schemasWithColumn(cluster, [c.project, ...c.tenants], 'bc')).toHaveLength(51);
    }
    const open = await cluster.query(
      `select 1 from schemaops.operations where status in ('applying', 'compensating')`,
    );
    expect(open.rowCount).toBe(0);
    await ops.close();
  });
});

async function collect(lines: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of lines) out.push(l);
  return out;
}
