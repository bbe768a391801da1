import { setImmediate as nextTurn } from 'node:timers/promises';
import type { CommitEvent, SqliteDatabase } from '@x/writecoordinator';
import { describe, expect } from 'vitest';
import { insert, it, openCoordinator, values } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

describe('group commit', () => {
  it('runs jobs in FIFO order, across batches', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t, { maxBatchSize: 7 });
    const events: CommitEvent[] = [];
    wc.subscribe((e) => events.push(e));
    const n = 50;
    const results = await Promise.all(Array.from({ length: n }, (_, i) => wc.submit(insert(`v${i}`))));
    expect(values(db)).toEqual(Array.from({ length: n }, (_, i) => `v${i}`));
    expect(results.map((r) => r.value)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    // 50 jobs queued in one tick with maxBatchSize 7 → ceil(50 / 7) batches, sequences 1..8.
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(events.map((e) => e.jobs.length)).toEqual([7, 7, 7, 7, 7, 7, 7, 1]);
    expect(results[0]!.seq).toBe(1);
    expect(results[49]!.seq).toBe(8);
    expect(wc.seq).toBe(8);
    await wc.close();
  });

  it('jobs queued together commit in one transaction and share a sequence', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    const rs = await Promise.all([wc.submit(insert('a')), wc.submit(insert('b')), wc.submit(insert('c'))]);
    expect(rs.map((r) => r.seq)).toEqual([1, 1, 1]);
    expect(wc.metrics().batches).toBe(1);
    await wc.close();
  });

  it('isolates a failing job: only its caller sees the error, its neighbours commit', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    await wc.submit(insert('taken'));
    const calls = new Map<string, number>();
    const counted = (v: string) => (d: SqliteDatabase) => {
      calls.set(v, (calls.get(v) ?? 0) + 1);
      return insert(v)(d);
    };
    const multi = (d: SqliteDatabase) => {
      insert('half-written')(d);
      insert('taken')(d); // UNIQUE violation after a successful statement
    };
    const ps = [
      wc.submit(counted('a')),
      wc.submit(multi),
      wc.submit(counted('b')),
      wc.submit(() => {
        throw new Error('boom');
      }),
      wc.submit(counted('c')),
    ];
    const [a, m, b, boom, c] = await Promise.allSettled(ps);
    expect(a!.status).toBe('fulfilled');
    expect(b!.status).toBe('fulfilled');
    expect(c!.status).toBe('fulfilled');
    const unique = await rejection(ps[1]!);
    expect(m!.status).toBe('rejected');
    expect(unique.code).toBe('WRITECOORDINATOR_SQLITE');
    expect(unique.details?.sqliteCode).toBe('SQLITE_CONSTRAINT_UNIQUE');
    expect(unique.retryable).toBe(false);
    expect(boom!.status).toBe('rejected');
    const failed = await rejection(ps[3]!);
    expect(failed.code).toBe('WRITECOORDINATOR_JOB_FAILED');
    expect((failed.cause as Error).message).toBe('boom');
    // Nothing of the failing multi-statement job survives; every other job is applied exactly once.
    expect(values(db)).toEqual(['taken', 'a', 'b', 'c']);
    // 'a' ran before the first failure, so it was invoked again in the savepoint re-run; its
    // effect was committed once. 'c' ran only in the re-run.
    expect(calls.get('a')).toBe(2);
    expect(calls.get('c')).toBe(1);
    const m2 = wc.metrics();
    expect(m2.isolatedBatches).toBe(1);
    expect(m2.failed).toBe(2);
    await wc.close();
  });

  it('a job that returns a Promise is a typed error and its synchronous writes are rolled back', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    const asyncJob = async (d: SqliteDatabase) => {
      insert('sync-part')(d);
      throw new Error('async failure, never observed');
    };
    const ok = wc.submit(insert('ok'));
    const e = await rejection(wc.submit(asyncJob));
    await ok;
    expect(e.code).toBe('WRITECOORDINATOR_ASYNC_JOB');
    expect(values(db)).toEqual(['ok']);
    await wc.close();
  });

  it('a batch where every job fails commits nothing and does not advance the sequence', async ({
    tdb: t,
  }) => {
    const { wc } = openCoordinator(t);
    const events: CommitEvent[] = [];
    wc.subscribe((e) => events.push(e));
    const fail = () => {
      throw new Error('x');
    };
    await Promise.allSettled([wc.submit(fail), wc.submit(fail)]);
    expect(wc.seq).toBe(0);
    expect(events).toEqual([]);
    await wc.close();
  });

  it('durability "full" on one job makes its batch commit under synchronous = FULL, then restores NORMAL', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    const seen: unknown[] = [];
    const probe = (d: SqliteDatabase) => seen.push(d.pragma('synchronous', { simple: true }));
    await Promise.all([wc.submit(probe), wc.submit(probe, { durability: 'full' })]);
    await wc.submit(probe);
    expect(seen).toEqual([2, 2, 1]);
    expect(db.pragma('synchronous', { simple: true })).toBe(1);
    await wc.close();
  });

  it('runExclusive runs alone in its own transaction, in queue order', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    const events: CommitEvent[] = [];
    wc.subscribe((e) => events.push(e));
    const ps = [
      wc.submit(insert('a')),
      wc.submit(insert('b')),
      wc.runExclusive((d) => {
        for (let i = 0; i < 100; i++) insert(`x${i}`)(d);
        return 'done';
      }),
      wc.submit(insert('c')),
    ];
    const rs = await Promise.all(ps);
    expect(rs[2]!.value).toBe('done');
    expect(events.map((e) => e.jobs.length)).toEqual([2, 1, 1]);
    expect(rs.map((r) => r.seq)).toEqual([1, 1, 2, 3]);
    const v = values(db);
    expect(v.slice(0, 2)).toEqual(['a', 'b']);
    expect(v.at(-1)).toBe('c');
    expect(v).toHaveLength(103);
    // A failing exclusive job leaves nothing behind.
    const e = await rejection(
      wc.runExclusive((d) => {
        insert('y')(d);
        throw new Error('no');
      }),
    );
    expect(e.code).toBe('WRITECOORDINATOR_JOB_FAILED');
    expect(values(db)).toHaveLength(103);
    await wc.close();
  });

  it('a job that ends the transaction itself is rejected; the others are not lost or doubled', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    const ps = [
      wc.submit(insert('a')),
      wc.submit((d) => {
        d.exec('ROLLBACK');
      }),
      wc.submit(insert('b')),
    ];
    const [a, bad, b] = await Promise.allSettled(ps);
    expect(a!.status).toBe('fulfilled');
    expect(b!.status).toBe('fulfilled');
    expect(bad!.status).toBe('rejected');
    const e = await rejection(ps[1]!);
    expect(e.details?.transactionEnded).toBe('rolled back');
    expect(values(db)).toEqual(['a', 'b']);

    const ps2 = [
      wc.submit(insert('c')),
      wc.submit((d) => {
        d.exec('COMMIT');
      }),
      wc.submit(insert('d')),
    ];
    const [c, bad2, d2] = await Promise.allSettled(ps2);
    expect(c!.status).toBe('fulfilled');
    expect(d2!.status).toBe('fulfilled');
    // the commit guard refuses a job's COMMIT: the job fails like any failing job, nothing ended
    const e2 = await rejection(ps2[1]!);
    expect(e2.details).toMatchObject({ sqliteCode: 'SQLITE_CONSTRAINT_FOREIGNKEY', applied: false });
    expect(bad2!.status).toBe('rejected');
    expect(values(db)).toEqual(['a', 'b', 'c', 'd']);
    expect(db.inTransaction).toBe(false);
    await wc.close();
  });

  it('an SQLite error at BEGIN fails the batch with its code, applies nothing, and is not retried', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t, { busyTimeoutMs: 50 });
    const other = t.open();
    other.exec('BEGIN IMMEDIATE');
    let ran = 0;
    const e = await rejection(
      wc.submit(() => {
        ran++;
      }),
    );
    expect(e.code).toBe('WRITECOORDINATOR_SQLITE');
    expect(String(e.details?.sqliteCode)).toMatch(/^SQLITE_BUSY/);
    expect(e.retryable).toBe(true);
    expect(ran).toBe(0);
    other.exec('ROLLBACK');
    await wc.submit(insert('after'));
    expect(values(db)).toEqual(['after']);
    await wc.close();
  });

  it('SQLITE_FULL in one job (whether SQLite rolls back the statement or the whole transaction) fails only that job', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    await wc.submit(insert('seed'));
    const pages = Number(db.pragma('page_count', { simple: true }));
    db.pragma(`max_page_count = ${pages + 8}`);
    const big = (d: SqliteDatabase) => insert('x'.repeat(200_000))(d); // needs ~50 pages
    const ps = [wc.submit(insert('a')), wc.submit(big), wc.submit(insert('b'))];
    const [a, full, b] = await Promise.allSettled(ps);
    expect(a!.status).toBe('fulfilled');
    expect(b!.status).toBe('fulfilled');
    expect(full!.status).toBe('rejected');
    const e = await rejection(ps[1]!);
    expect(e.code).toBe('WRITECOORDINATOR_SQLITE');
    expect(e.details?.sqliteCode).toBe('SQLITE_FULL');
    expect(e.details?.applied).toBe(false);
    expect(values(db)).toEqual(['seed', 'a', 'b']);
    expect(db.inTransaction).toBe(false);
    await wc.close();
  });

  it('maxBatchDelayMs gathers jobs that arrive within the delay into one batch; a full batch runs at once', async ({
    tdb: t,
  }) => {
    // Without a delay, a job that arrives a turn of the event loop after another commits apart.
    const { wc: wc0 } = openCoordinator(t, { maxBatchSize: 3 });
    const a0 = wc0.submit(insert('a0'));
    await nextTurn();
    const b0 = wc0.submit(insert('b0'));
    expect([(await a0).seq, (await b0).seq]).toEqual([1, 2]);
    await wc0.close();
    // With a delay, jobs that arrive turns apart wait for each other in the queue; the one that
    // fills the batch runs it at once. The delay is far beyond the test timeout: a full batch that
    // waited for it would fail by that timeout.
    const { wc } = openCoordinator(t, { maxBatchDelayMs: 600_000, maxBatchSize: 3 });
    const ps = [wc.submit(insert('a'))];
    await nextTurn();
    ps.push(wc.submit(insert('b')));
    await nextTurn();
    expect(wc.metrics()).toMatchObject({ queueDepth: 2, batches: 0 });
    ps.push(wc.submit(insert('c')));
    expect((await Promise.all(ps)).map((r) => r.seq)).toEqual([3, 3, 3]);
    await wc.close();
  });
});
