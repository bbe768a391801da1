/**
 * Property: whatever mix of succeeding, failing, replayed and async jobs is queued together, and
 * however it is split into batches, the database and every caller's outcome equal those of running
 * the jobs one at a time, in order, where a failing job has no effect.
 */

import type { SqliteDatabase } from '@x/writecoordinator';
import fc from 'fast-check';
import { describe, expect } from 'vitest';
import { it, openCoordinator, values } from '../helpers/db.js';

type Op =
  | { kind: 'insert'; v: string; requestId: string | null } // fails iff v is already present (UNIQUE)
  | { kind: 'throwAfterWrite'; v: string; requestId: string | null }
  | { kind: 'async'; v: string; requestId: string | null };

const opArb: fc.Arbitrary<Op> = fc.record({
  kind: fc.constantFrom('insert', 'insert', 'insert', 'throwAfterWrite', 'async'),
  v: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'),
  requestId: fc.option(fc.constantFrom('r1', 'r2', 'r3', 'r4'), { nil: null }),
}) as fc.Arbitrary<Op>;

function jobOf(op: Op): (db: SqliteDatabase) => unknown {
  const insert = (db: SqliteDatabase) =>
    Number(db.prepare('INSERT INTO items (v) VALUES (?)').run(op.v).lastInsertRowid);
  if (op.kind === 'insert') return (db) => ({ v: op.v, id: insert(db) });
  if (op.kind === 'throwAfterWrite')
    return (db) => {
      insert(db);
      throw new Error('after write');
    };
  return async (db: SqliteDatabase) => insert(db);
}

/** One at a time, in order: the outcome each caller should see and the rows that should remain. */
function model(ops: Op[]): { outcomes: unknown[]; rows: string[] } {
  const rows: string[] = [];
  const recorded = new Map<string, unknown>();
  const outcomes = ops.map((op) => {
    if (op.requestId !== null && recorded.has(op.requestId)) {
      return { ok: true, value: recorded.get(op.requestId), replayed: true };
    }
    // An async job's body runs up to its first await, but whatever it does it returns a Promise.
    if (op.kind === 'async') return { ok: false, code: 'WRITECOORDINATOR_ASYNC_JOB' };
    if (rows.includes(op.v)) return { ok: false, code: 'WRITECOORDINATOR_SQLITE' };
    if (op.kind === 'throwAfterWrite') return { ok: false, code: 'WRITECOORDINATOR_JOB_FAILED' };
    rows.push(op.v);
    const value = { v: op.v, id: rows.length };
    if (op.requestId !== null) recorded.set(op.requestId, value);
    return { ok: true, value, replayed: false };
  });
  return { outcomes, rows };
}

describe('batches behave like one job at a time', () => {
  it('for any mix of jobs and any batch size', async ({ tdb: t }) => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 1, max: 8 }),
        async (ops, maxBatchSize) => {
          const { db, wc } = openCoordinator(t, { maxBatchSize });
          db.exec('DELETE FROM items; DELETE FROM _x_wc_requests'); // ids restart at 1
          const settled = await Promise.allSettled(
            ops.map((op) => wc.submit(jobOf(op), op.requestId === null ? {} : { requestId: op.requestId })),
          );
          const outcomes = settled.map((s) =>
            s.status === 'fulfilled'
              ? { ok: true, value: s.value.value, replayed: s.value.replayed }
              : { ok: false, code: (s.reason as { code?: string }).code },
          );
          const expected = model(ops);
          expect(outcomes).toEqual(expected.outcomes);
          expect(values(db)).toEqual(expected.rows);
          await wc.close();
          db.close();
        },
      ),
      { numRuns: 60 },
    );
  });
});
