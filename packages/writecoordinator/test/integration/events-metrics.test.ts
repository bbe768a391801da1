import diagnostics from 'node:diagnostics_channel';
import {
  BATCH_CHANNEL,
  CLOSE_CHANNEL,
  type CommitEvent,
  type WriteCoordinatorMetrics,
} from '@x/writecoordinator';
import { describe, expect } from 'vitest';
import { insert, it, openCoordinator } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

describe('change events', () => {
  it('one event per commit, to every listener, with the committed jobs only', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    const a: CommitEvent[] = [];
    const b: CommitEvent[] = [];
    wc.subscribe((e) => a.push(e));
    const unsubscribe = wc.subscribe((e) => b.push(e));
    wc.subscribe(() => {
      throw new Error('a broken listener does not break the others');
    });
    await Promise.allSettled([
      wc.submit(insert('x'), { requestId: 'r1' }),
      wc.submit(insert('x')), // fails: UNIQUE
      wc.submit(insert('y')),
    ]);
    await wc.submit(insert('z'), { requestId: 'r1' }); // replay: nothing committed, no event
    unsubscribe();
    await wc.submit(insert('w'));
    expect(a).toEqual([
      {
        seq: 1,
        jobs: [
          { method: null, requestId: 'r1' },
          { method: null, requestId: null },
        ],
      },
      { seq: 2, jobs: [{ method: null, requestId: null }] },
    ]);
    expect(b).toEqual([a[0]]);
    await wc.close();
  });

  it('changes() is an async iterator that ends on close and rejects on abort', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    const seen: number[] = [];
    const consumer = (async () => {
      for await (const e of wc.changes()) seen.push(e.seq);
    })();
    const ac = new AbortController();
    const aborted = (async () => {
      for await (const _ of wc.changes({ signal: ac.signal })) {
        /* until aborted */
      }
    })();
    for (let i = 0; i < 5; i++) await wc.submit(insert(`c${i}`));
    ac.abort(new Error('stop'));
    await expect(aborted).rejects.toThrow('stop');
    await wc.close();
    await consumer;
    expect(seen).toEqual([1, 2, 3, 4, 5]);
  });

  it('changes() with an aborted signal rejects with its reason; subscribing a function twice calls it twice', async ({
    tdb: t,
  }) => {
    const { wc } = openCoordinator(t);
    const reason = new Error('gave up before reading');
    const it = wc.changes({ signal: AbortSignal.abort(reason) })[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toBe(reason);
    const seen: number[] = [];
    const listener = (e: CommitEvent) => seen.push(e.seq);
    const first = wc.subscribe(listener);
    wc.subscribe(listener);
    await wc.submit(insert('a'));
    first();
    first(); // idempotent: the other subscription of the same function stays
    await wc.submit(insert('b'));
    expect(seen).toEqual([1, 1, 2]);
    await wc.close();
  });

  it('after close, changes() ends at once and subscribe is a no-op', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    await wc.close();
    const seen: unknown[] = [];
    for await (const e of wc.changes()) seen.push(e);
    const unsubscribe = wc.subscribe((e) => seen.push(e));
    unsubscribe();
    expect(seen).toEqual([]);
  });

  it('a changes() consumer that falls too far behind fails with CHANGES_OVERFLOW', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t, { changesBufferSize: 2 });
    const it = wc.changes()[Symbol.asyncIterator]();
    for (let i = 0; i < 4; i++) await wc.submit(insert(`o${i}`));
    const e = await rejection(it.next());
    expect(e.code).toBe('WRITECOORDINATOR_CHANGES_OVERFLOW');
    expect(e.retryable).toBe(true);
    // Events 1 and 2 filled the buffer, event 3 overflowed it: nothing was delivered yet.
    expect(e.details).toEqual({ capacity: 2, lastDeliveredSeq: 0 });
    // The stream stays failed: a later read gets the same error, not later events.
    await expect(it.next()).rejects.toBe(e);
    await wc.close();
  });
});

describe('metrics', () => {
  it('is a snapshot consistent with what happened', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t, { queueSize: 4, maxWaiting: 0, maxBatchDelayMs: 20 });
    const ac = new AbortController();
    const outcomes = await Promise.allSettled([
      wc.submit(insert('m1'), { requestId: 'm1' }),
      wc.submit(insert('m1')), // fails
      wc.submit(insert('m2'), { signal: ac.signal }), // aborted while queued
      wc.submit(insert('m3'), { deadline: Date.now() + 5 }), // expires in the queue
      wc.submit(insert('m4')), // queue full (maxWaiting 0)
      wc.submit(insert('m5'), { deadline: Date.now() - 1 }), // expired on arrival
      (async () => {
        ac.abort();
      })(),
    ]);
    expect(outcomes.map((o) => o.status)).toEqual([
      'fulfilled',
      'rejected',
      'rejected',
      'rejected',
      'rejected',
      'rejected',
      'fulfilled',
    ]);
    await wc.submit(insert('m1'), { requestId: 'm1' }); // replay
    const m: WriteCoordinatorMetrics = wc.metrics();
    expect(m).toMatchObject({
      accepted: 6,
      completed: 2,
      replayed: 1,
      failed: 1,
      expired: 2,
      aborted: 1,
      rejected: 1,
      dropped: 0,
      queueDepth: 0,
      maxQueueDepth: 4,
      waiting: 0,
      batches: 1,
      seq: 1,
    });
    expect(m.accepted).toBe(m.completed + m.failed + m.expired + m.aborted + m.dropped + m.queueDepth);
    expect(m.meanBatchSize).toBe(1);
    expect(m.p50LatencyMs).toBeGreaterThan(0);
    expect(m.p99LatencyMs).toBeGreaterThanOrEqual(m.p50LatencyMs);
    await wc.close();
  });
});

describe('tracing', () => {
  it('publishes every committed batch and the close on diagnostics_channel', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    const batches: unknown[] = [];
    const closes: unknown[] = [];
    const onBatch = (m: unknown) => batches.push(m);
    const onClose = (m: unknown) => closes.push(m);
    diagnostics.subscribe(BATCH_CHANNEL, onBatch);
    diagnostics.subscribe(CLOSE_CHANNEL, onClose);
    try {
      await Promise.all([wc.submit(insert('a')), wc.submit(insert('b'), { durability: 'full' })]);
      await wc.close();
    } finally {
      diagnostics.unsubscribe(BATCH_CHANNEL, onBatch);
      diagnostics.unsubscribe(CLOSE_CHANNEL, onClose);
    }
    expect(batches).toEqual([expect.objectContaining({ seq: 1, size: 2, durability: 'full' })]);
    expect(closes).toEqual([expect.objectContaining({ seq: 1 })]);
  });
});
