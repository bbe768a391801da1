import { describe, expect } from 'vitest';
import { insert, it, openCoordinator, values } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

// A long maxBatchDelayMs holds jobs in the queue so that they can be observed there. Deadlines
// shorter than it are reached first whatever the machine's load: Node runs expired timers in the
// order of their expiry, and the test's continuation runs (a microtask) before the next timer.
const HOLD_MS = 300;

describe('backpressure, deadlines, cancellation', () => {
  it('a full queue makes submit wait until its deadline or signal, then QUEUE_FULL; waiters get slots in order', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { queueSize: 2, maxWaiting: 3, maxBatchDelayMs: HOLD_MS });
    const queued = [wc.submit(insert('q1')), wc.submit(insert('q2'))];
    const timedOut = wc.submit(insert('late'), { deadline: Date.now() + 40 });
    const ac = new AbortController();
    const aborted = wc.submit(insert('aborted'), { signal: ac.signal });
    const patient = wc.submit(insert('patient'));
    const overflow = wc.submit(insert('overflow')); // a 4th waiter: over maxWaiting → at once
    expect(wc.metrics()).toMatchObject({ queueDepth: 2, waiting: 3 });

    const o = await rejection(overflow);
    expect(o.code).toBe('WRITECOORDINATOR_QUEUE_FULL');
    expect(o.retryable).toBe(true);
    expect(o.details?.applied).toBe(false);
    ac.abort(new Error('caller gave up'));
    const a = await rejection(aborted);
    expect(a.code).toBe('WRITECOORDINATOR_QUEUE_FULL');
    // The overflow and the abort did not touch the waiter with a deadline: it is still waiting.
    expect(wc.metrics()).toMatchObject({ queueDepth: 2, waiting: 2 });
    const l = await rejection(timedOut);
    expect(l.code).toBe('WRITECOORDINATOR_QUEUE_FULL');
    // Its deadline, not a freed slot, ended its wait: the queue is still held, nothing has run.
    expect(wc.metrics()).toMatchObject({ queueDepth: 2, waiting: 1, completed: 0 });

    await Promise.all(queued);
    expect((await patient).value).toBe(3);
    expect(values(db)).toEqual(['q1', 'q2', 'patient']);
    expect(wc.metrics()).toMatchObject({ rejected: 3, accepted: 3, completed: 3, waiting: 0, queueDepth: 0 });
    await wc.close();
  });

  it('a job whose deadline passes while queued is rejected with EXPIRED and never runs', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { maxBatchDelayMs: 100 });
    let ran = false;
    const expiring = wc.submit(
      () => {
        ran = true;
      },
      { deadline: Date.now() + 20 },
    );
    const fine = wc.submit(insert('fine'), { deadline: Date.now() + 10_000 });
    const e = await rejection(expiring);
    expect(e.code).toBe('WRITECOORDINATOR_EXPIRED');
    expect(e.details?.applied).toBe(false);
    expect(e.retryable).toBe(true);
    await fine;
    expect(ran).toBe(false);
    const past = await rejection(wc.submit(insert('past'), { deadline: Date.now() - 1 }));
    expect(past.code).toBe('WRITECOORDINATOR_EXPIRED');
    expect(values(db)).toEqual(['fine']);
    expect(wc.metrics()).toMatchObject({ expired: 2, completed: 1 });
    await wc.close();
  });

  it('an aborted job still queued is removed and never runs; a pre-aborted signal never queues', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { maxBatchDelayMs: 50 });
    const ac = new AbortController();
    let ran = false;
    const p = wc.submit(
      () => {
        ran = true;
      },
      { signal: ac.signal },
    );
    const other = wc.submit(insert('other'));
    expect(wc.metrics().queueDepth).toBe(2);
    ac.abort();
    const e = await rejection(p);
    expect(e.code).toBe('WRITECOORDINATOR_ABORTED');
    expect(wc.metrics().queueDepth).toBe(1);
    // `other` was queued after it: once `other` has committed, the aborted job would have run (FIFO)
    await other;
    expect(ran).toBe(false);
    const pre = await rejection(wc.submit(insert('pre'), { signal: AbortSignal.abort() }));
    expect(pre.code).toBe('WRITECOORDINATOR_ABORTED');
    expect(values(db)).toEqual(['other']);
    expect(wc.metrics()).toMatchObject({ aborted: 1, rejected: 1, completed: 1 });
    await wc.close();
  });

  it('an abort after the job committed does not change its outcome', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    const ac = new AbortController();
    const r = await wc.submit(insert('x'), { signal: ac.signal });
    ac.abort();
    expect(r.value).toBe(1);
    await wc.close();
  });
});

describe('close', () => {
  it('stops intake, drains what is queued, and is idempotent', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t, { maxBatchSize: 3, maxBatchDelayMs: 20 });
    const ps = Array.from({ length: 10 }, (_, i) => wc.submit(insert(`d${i}`)));
    const c1 = wc.close({ drainTimeoutMs: 5_000 });
    const c2 = wc.close();
    expect(c2).toBe(c1);
    const late = await rejection(wc.submit(insert('late')));
    expect(late.code).toBe('WRITECOORDINATOR_CLOSED');
    await c1;
    expect((await Promise.all(ps)).length).toBe(10);
    expect(values(db)).toHaveLength(10);
    await wc[Symbol.asyncDispose]();
  });

  it('rejects what is left at the drain deadline with SHUTTING_DOWN (retryable, not applied)', async ({
    tdb: t,
  }) => {
    // The default drain timeout is far beyond the test timeout: close() returns only because it
    // keeps to the drainTimeoutMs it is given (a hang fails by the test timeout).
    const { db, wc } = openCoordinator(t, { queueSize: 2, maxBatchSize: 1, drainTimeoutMs: 600_000 });
    const slow = (d: Parameters<ReturnType<typeof insert>>[0]) => {
      const until = Date.now() + 150;
      while (Date.now() < until) {} // the subject: a job that holds the writer loop past the drain deadline
      return insert('a')(d);
    };
    const first = wc.submit(slow);
    const outcomes = [wc.submit(insert('b')), wc.submit(insert('c'))].map(rejection);
    expect(wc.metrics()).toMatchObject({ queueDepth: 2, waiting: 1 });
    await wc.close({ drainTimeoutMs: 30 });
    expect((await first).value).toBe(1);
    for (const p of outcomes) {
      const e = await p;
      expect(e.code).toBe('WRITECOORDINATOR_SHUTTING_DOWN');
      expect(e.retryable).toBe(true);
      expect(e.details?.applied).toBe(false);
    }
    expect(values(db)).toEqual(['a']);
    expect(wc.metrics()).toMatchObject({ completed: 1, dropped: 1, rejected: 1, queueDepth: 0 });
  });

  it('await using closes the coordinator', { timeout: 3000 }, async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    {
      await using c = wc;
      await c.submit(insert('a'));
    }
    expect((await rejection(wc.submit(insert('b')))).code).toBe('WRITECOORDINATOR_CLOSED');
  });
});

describe('deadline at run time', () => {
  it('a job batched behind a slow job is rejected with EXPIRED if its deadline passes before its turn', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    let ran = false;
    const deadline = Date.now() + 20;
    const slow = wc.submit((d) => {
      while (Date.now() < deadline) {} // the subject: the next job's deadline passes meanwhile
      return insert('slow')(d);
    });
    const late = wc.submit(
      () => {
        ran = true;
      },
      { deadline },
    );
    const after = wc.submit(insert('after'));
    const e = await rejection(late);
    expect(e.code).toBe('WRITECOORDINATOR_EXPIRED');
    await Promise.all([slow, after]);
    expect(ran).toBe(false);
    expect(values(db)).toEqual(['slow', 'after']);
    const m = wc.metrics();
    expect(m).toMatchObject({ expired: 1, completed: 2, batches: 1 });
    expect(m.accepted).toBe(m.completed + m.failed + m.expired + m.aborted + m.dropped + m.queueDepth);
    await wc.close();
  });

  it('an expired job stays expired (once) when a failure in its batch forces the savepoint re-run', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    const deadline = Date.now() + 20;
    const slow = wc.submit((d) => {
      while (Date.now() < deadline) {} // the next job's deadline passes meanwhile
      return insert('a')(d);
    });
    const late = wc.submit(insert('late'), { deadline }).then(
      () => 'ran',
      (e: { code?: string }) => e.code,
    );
    const failing = wc.submit(() => {
      throw new Error('fails');
    });
    const b = wc.submit(insert('b'));
    expect(await late).toBe('WRITECOORDINATOR_EXPIRED');
    expect((await rejection(failing)).code).toBe('WRITECOORDINATOR_JOB_FAILED');
    await Promise.all([slow, b]);
    expect(values(db)).toEqual(['a', 'b']);
    expect(wc.metrics()).toMatchObject({ expired: 1, failed: 1, completed: 2, isolatedBatches: 1 });
    await wc.close();
  });
});
