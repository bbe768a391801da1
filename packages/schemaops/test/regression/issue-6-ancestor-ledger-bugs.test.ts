// Regression tests for the ancestor's ledger bugs listed in issue 6 (design note Part 1):
//  1. reconcile re-ran everything, inserted a NEW ledger row and left the old one stuck in `applying`;
//  2. the compensation outcome was overwritten (a failed compensation still ended `failed`);
//  3. the retry endpoint never repaired anything;
//  4. the background reconciler only logged;
//  5. nothing enforced idempotency.
import type { Cluster } from '@x/dbx';
import type { TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSchemaOps, physicalDdlRequired, type SchemaOps, schemaPerTenant } from '../../src/index.js';
import {
  addColumnHandler,
  type Calls,
  closeTestDatabase,
  createProjectSchemas,
  type Faults,
  newCalls,
  openTestDatabase,
} from '../helpers.js';

let db: TestDatabase;
let cluster: Cluster;
let ops: SchemaOps;
const faults: Faults = {};
const calls: Calls = newCalls();
let tenants: string[];
const project = 'reg';

beforeAll(async () => {
  ({ db, cluster } = await openTestDatabase('schemaops_reg', { modelFields: true }));
  tenants = await createProjectSchemas(cluster, project, 8);
  ops = createSchemaOps({
    cluster,
    tenants: schemaPerTenant({ cluster }),
    operations: { add_column: addColumnHandler(faults, calls, physicalDdlRequired) },
  });
});
afterAll(async () => {
  await ops?.close();
  await closeTestDatabase(db, cluster);
});

const rows = async () => (await cluster.query('select id, status from schemaops.operations')).rows;

function reset(next: Faults): void {
  for (const k of Object.keys(faults)) delete faults[k as keyof Faults];
  Object.assign(faults, next);
}

describe('issue 6: ancestor ledger bugs', () => {
  it('1. reconcile updates the same row, never inserts another, never leaves it applying', async () => {
    reset({ cache: true });
    const id = await ops
      .run({ project, type: 'add_column', request: { column: 'r1' } })
      .catch((e: { details: { operationId: string } }) => e.details.operationId);
    const before = await rows();
    reset({});
    const op = await ops.reconcile(id as string);
    expect(op.id).toBe(id);
    expect(op.status).toBe('committed');
    const after = await rows();
    expect(after).toHaveLength(before.length);
    expect(after.filter((r) => r.status === 'applying')).toEqual([]);
  });

  it('2. a failed compensation ends needs_repair and keeps both errors', async () => {
    reset({ system: true, compensate: new Set([tenants[0] as string]) });
    const e = await ops
      .run({ project, type: 'add_column', request: { column: 'r2' } })
      .catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'SCHEMAOPS_COMPENSATION_FAILED' });
    const op = await ops.get((e as { details: { operationId: string } }).details.operationId);
    expect(op.status).toBe('needs_repair');
    expect(op.lastError).toContain('injected system failure');
    expect(op.compensationError).toContain('injected compensation failure');
  });

  it('3 + 4. an explicit reconcile and the background reconciler actually repair', async () => {
    reset({ cache: true });
    const a = await ops
      .run({ project, type: 'add_column', request: { column: 'r3' } })
      .catch((e: { details: { operationId: string } }) => e.details.operationId);
    const b = await ops
      .run({ project, type: 'add_column', request: { column: 'r4' } })
      .catch((e: { details: { operationId: string } }) => e.details.operationId);
    reset({});
    expect((await ops.reconcile(a as string)).status).toBe('committed');
    const r = ops.startReconciler({ intervalMs: 60_000, project });
    const outcomes = await r.tick();
    await r.stop();
    expect(outcomes.find((o) => o.operationId === b)).toMatchObject({
      outcome: 'repaired',
      status: 'committed',
    });
  });

  it('5. an idempotency key is enforced by a unique constraint in the ledger', async () => {
    reset({});
    const input = { project, type: 'add_column', request: { column: 'r5' }, idempotencyKey: 'k' };
    const first = await ops.run(input);
    const again = await ops.run(input);
    expect(again.id).toBe(first.id);
    await expect(
      cluster.exec(
        `insert into schemaops.operations (id, project, operation_type, request, request_hash, idempotency_key, status)
         values (gen_random_uuid(), $1, 'add_column', '{}', 'h', 'k', 'committed')`,
        [project],
      ),
    ).rejects.toThrow();
  });

  it('every public async operation honours an aborted signal', async () => {
    const ac = new AbortController();
    ac.abort(new Error('aborted by test'));
    const signal = ac.signal;
    const id = (await ops.list({ project, limit: 1 }))[0]?.id as string;
    await expect(ops.migrate({ signal })).rejects.toThrow('aborted by test');
    await expect(ops.get(id, { signal })).rejects.toThrow();
    await expect(ops.list({ project, signal })).rejects.toThrow();
    await expect(ops.listRepairable(project, 10, { signal })).rejects.toThrow();
    await expect(ops.reconcile(id, { signal })).rejects.toThrow('aborted by test');
    await expect(ops.run({ project, type: 'add_column', request: { column: 'z' }, signal })).rejects.toThrow(
      'aborted by test',
    );
  });
});
