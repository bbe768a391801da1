import type { Cluster } from '@x/dbx';
import { type TestDatabase, waitFor } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  physicalDdlRequired,
  type SchemaOps,
  type SchemaOpsEvent,
  schemaPerTenant,
} from '../../src/index.js';
import {
  addColumnHandler,
  closeTestDatabase,
  newCalls,
  openTestDatabase,
  type ProjectFixture,
  projectFixture,
} from '../helpers.js';

let db: TestDatabase;
let cluster: Cluster;

beforeAll(async () => {
  ({ db, cluster } = await openTestDatabase('schemaops_rec', { modelFields: true }));
});
afterAll(() => closeTestDatabase(db, cluster));

let seq = 0;
const setup = (n = 50): Promise<ProjectFixture> => projectFixture(cluster, `r${++seq}`, n);

async function needsRepair(ops: SchemaOps, project: string, column: string): Promise<string> {
  try {
    await ops.run({ project, type: 'add_column', request: { column } });
  } catch (e) {
    return (e as { details: { operationId: string } }).details.operationId;
  }
  throw new Error('expected the run to fail');
}

describe('background reconciler', () => {
  it('repairs with backoff recorded in the ledger and reports each outcome', async () => {
    const { project, ops, faults, calls } = await setup();
    faults.cache = true;
    const id = await needsRepair(ops, project, 'b1');
    const r = ops.startReconciler({ intervalMs: 60_000, baseDelayMs: 150, maxDelayMs: 1_000, project });
    // Pass 1: still failing → backoff, the next attempt time is in the ledger.
    const [first] = await r.tick();
    expect(first).toMatchObject({ operationId: id, outcome: 'failed', status: 'needs_repair', attempt: 2 });
    expect(first?.nextAttemptAt).toBeInstanceOf(Date);
    const op = await ops.get(id);
    expect(op.nextAttemptAt?.getTime()).toBe(first?.nextAttemptAt?.getTime());
    // Not due yet: a pass right away does nothing.
    expect(await r.tick()).toEqual([]);
    faults.cache = false;
    // Passes do nothing until the recorded next attempt time; the first one after it repairs.
    let second: Awaited<ReturnType<typeof r.tick>>[number] | undefined;
    await waitFor(
      async () => {
        [second] = await r.tick();
        return second !== undefined;
      },
      { timeoutMs: 10_000, intervalMs: 25, what: 'the backed-off repair' },
    );

    expect(second).toMatchObject({ operationId: id, outcome: 'repaired', status: 'committed', attempt: 3 });
    const repaired = await ops.get(id);
    expect(repaired.status).toBe('committed');
    expect(repaired.nextAttemptAt).toBeNull();
    expect(calls.cache).toBe(3);
    expect(ops.metrics().reconcile).toMatchObject({ attempts: 2, repaired: 1, failed: 1 });
    await r.stop();
    await ops.close();
  });

  it('gives up after maxAttempts (exhausted) and stops picking the operation', async () => {
    const { project, ops, faults } = await setup();
    faults.cache = true;
    const id = await needsRepair(ops, project, 'b2');
    const r = ops.startReconciler({
      intervalMs: 60_000,
      baseDelayMs: 0,
      maxDelayMs: 0,
      maxAttempts: 3,
      project,
    });
    const outcomes: string[] = [];
    for (let i = 0; i < 4; i++) for (const e of await r.tick()) outcomes.push(e.outcome);
    expect(outcomes).toEqual(['failed', 'exhausted']);
    const op = await ops.get(id);
    expect(op.status).toBe('needs_repair');
    expect(op.attemptCount).toBe(3);
    expect(ops.metrics().reconcile.exhausted).toBe(1);
    // Still listed as repairable for an operator, who can reconcile it by hand.
    expect((await ops.listRepairable(project)).map((o) => o.id)).toEqual([id]);
    faults.cache = false;
    expect((await ops.reconcile(id)).status).toBe('committed');
    await r.stop();
    await ops.close();
  });

  it('skips an operation still running (its project lock is held) without spending an attempt', async () => {
    const { project, ops, faults } = await setup();
    faults.tenantSleepMs = 10;
    const started = new Promise<void>((resolve) => ops.on('step', () => resolve()));
    const running = ops.run({ project, type: 'add_column', request: { column: 'b3' } });
    await started;
    const other = createSchemaOps({
      cluster,
      tenants: schemaPerTenant({ cluster }),
      operations: { add_column: addColumnHandler({}, newCalls(), physicalDdlRequired) },
    });
    const listed = await other.listRepairable(project);
    expect(listed.map((o) => [o.status, o.projectLocked])).toEqual([['applying', true]]);
    const r = other.startReconciler({ intervalMs: 60_000, project });
    const events = await r.tick();
    expect(events.map((e) => e.outcome)).toEqual(['locked']);
    const op = await running;
    expect(op.status).toBe('committed');
    expect(op.attemptCount).toBe(1);
    expect(other.metrics().reconcile.locked).toBe(1);
    await r.stop();
    await other.close();
    await ops.close();
  });

  it('runs on its own timer and stops with close()', async () => {
    const { project, ops, faults } = await setup();
    faults.cache = true;
    const id = await needsRepair(ops, project, 'b4');
    faults.cache = false;
    const seen = new Promise<SchemaOpsEvent>((resolve) => ops.on('reconcile', resolve));
    const r = ops.startReconciler({ intervalMs: 30, project });
    expect(r.running).toBe(true);
    expect(await seen).toMatchObject({ operationId: id, outcome: 'repaired' });
    await ops.close();
    expect(r.running).toBe(false);
  });

  it('rejects invalid reconciler options', async () => {
    const { ops } = await setup(1);
    expect(() => ops.startReconciler({ intervalMs: 0 })).toThrow(
      expect.objectContaining({ code: 'SCHEMAOPS_INVALID_OPTIONS' }),
    );
    await ops.close();
  });
});
