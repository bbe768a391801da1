/**
 * Issue 3: the ancestor (Pando's Go writecoordinator, design note §4 and §9) had these bugs; each
 * test pins the fix.
 */
import { describe, expect } from 'vitest';
import { insert, it, openCoordinator, values } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

describe('issue 3: ancestor bugs', () => {
  it('after close every submit is rejected with CLOSED and none runs (the ancestor accepted ~50 %)', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    await wc.close();
    let ran = 0;
    const errors = await Promise.all(
      Array.from({ length: 100 }, () =>
        rejection(
          wc.submit(() => {
            ran++;
          }),
        ),
      ),
    );
    expect(new Set(errors.map((e) => e.code))).toEqual(new Set(['WRITECOORDINATOR_CLOSED']));
    expect(ran).toBe(0);
    expect(values(db)).toEqual([]);
  });

  it('shutdown drains queued writes instead of dropping them, and queue depth does not leak', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { maxBatchSize: 4 });
    const ps = Array.from({ length: 20 }, (_, i) => wc.submit(insert(`s${i}`)));
    await wc.close();
    await Promise.all(ps);
    expect(values(db)).toHaveLength(20);
    expect(wc.metrics().queueDepth).toBe(0);
  });

  it('a caller that gives up while its job is queued is not written later (no zombie write)', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { maxBatchDelayMs: 50 });
    const ac = new AbortController();
    const p = wc.submit(insert('zombie'), { signal: ac.signal, deadline: Date.now() + 10_000 });
    ac.abort();
    expect((await rejection(p)).code).toBe('WRITECOORDINATOR_ABORTED');
    await wc.submit(insert('after'));
    expect(values(db)).toEqual(['after']);
    await wc.close();
  });

  it('a full queue does not block forever: the deadline bounds the wait', async ({ tdb: t }) => {
    // A batch delay far beyond the test timeout: the queue does not move by itself, so only the
    // deadline can end the wait (a wait that it did not bound fails by the test timeout).
    const { wc } = openCoordinator(t, { queueSize: 1, maxBatchDelayMs: 600_000 });
    const held = wc.submit(insert('held'));
    const e = await rejection(wc.submit(insert('blocked'), { deadline: Date.now() + 30 }));
    expect(e.code).toBe('WRITECOORDINATOR_QUEUE_FULL');
    expect(wc.metrics()).toMatchObject({ queueDepth: 1, waiting: 0, completed: 0, rejected: 1 });
    await wc.close({ drainTimeoutMs: 2_000 }); // runs the held job at once
    expect((await held).value).toBe(1);
  });

  it('SQLite errors keep their code (the ancestor matched message substrings)', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    await wc.submit(insert('dup'));
    const e = await rejection(wc.submit(insert('dup')));
    expect(e.details?.sqliteCode).toBe('SQLITE_CONSTRAINT_UNIQUE');
    expect(e.details?.applied).toBe(false);
    expect((e.cause as { code?: string }).code).toBe('SQLITE_CONSTRAINT_UNIQUE');
    await wc.close();
  });
});
