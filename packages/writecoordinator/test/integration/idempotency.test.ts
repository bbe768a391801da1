import { createWriteCoordinator, REQUESTS_TABLE, type SqliteDatabase } from '@x/writecoordinator';
import { describe, expect } from 'vitest';
import { insert, it, openCoordinator, values } from '../helpers/db.js';
import { rejection } from '../helpers/errors.js';

describe('idempotency and the commit sequence', () => {
  it('a repeated requestId returns the recorded result without running the job', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    let runs = 0;
    const job = (d: SqliteDatabase) => {
      runs++;
      return { id: insert(`r${runs}`)(d), tag: 'first' };
    };
    const first = await wc.submit(job, { requestId: 'req-1' });
    await wc.submit(insert('between'));
    const again = await wc.submit(job, { requestId: 'req-1' });
    expect(first).toEqual({ value: { id: 1, tag: 'first' }, seq: 1, replayed: false });
    expect(again).toEqual({ value: { id: 1, tag: 'first' }, seq: 1, replayed: true });
    expect(runs).toBe(1);
    expect(values(db)).toEqual(['r1', 'between']);
    expect(wc.metrics().replayed).toBe(1);
    await wc.close();
  });

  it('the same requestId twice in one batch runs once; undefined results replay as undefined', async ({
    tdb: t,
  }) => {
    const { db, wc } = openCoordinator(t);
    let runs = 0;
    const job = (d: SqliteDatabase) => {
      runs++;
      insert('once')(d);
    };
    const [a, b] = await Promise.all([
      wc.submit(job, { requestId: 'x' }),
      wc.submit(job, { requestId: 'x' }),
    ]);
    expect(runs).toBe(1);
    expect(a).toEqual({ value: undefined, seq: 1, replayed: false });
    expect(b).toEqual({ value: undefined, seq: 1, replayed: true });
    expect(values(db)).toEqual(['once']);
    await wc.close();
  });

  it('replays after a restart, with the original sequence; the sequence itself survives the restart', async ({
    tdb: t,
  }) => {
    const first = openCoordinator(t);
    await first.wc.submit(insert('a'));
    const r = await first.wc.submit(insert('b'), { requestId: 'req-b' });
    expect(r.seq).toBe(2);
    await first.wc.close();
    first.db.close();

    const db = t.open();
    const wc = createWriteCoordinator({ database: db });
    expect(wc.seq).toBe(2);
    const replay = await wc.submit(insert('b'), { requestId: 'req-b' });
    expect(replay).toEqual({ value: 2, seq: 2, replayed: true });
    const next = await wc.submit(insert('c'));
    expect(next.seq).toBe(3);
    expect(values(db)).toEqual(['a', 'b', 'c']);
    await wc.close();
  });

  it('a failed job records nothing, so retrying its requestId runs it again', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    let fail = true;
    const job = (d: SqliteDatabase) => {
      insert('z')(d);
      if (fail) throw new Error('transient');
      return 'ok';
    };
    expect((await rejection(wc.submit(job, { requestId: 'r' }))).code).toBe('WRITECOORDINATOR_JOB_FAILED');
    fail = false;
    expect(await wc.submit(job, { requestId: 'r' })).toMatchObject({ value: 'ok', replayed: false });
    expect(values(db)).toEqual(['z']);
    await wc.close();
  });

  it('a result that cannot be stored as JSON fails the job and applies nothing', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    const e = await rejection(
      wc.submit(
        (d) => {
          insert('n')(d);
          return 10n;
        },
        { requestId: 'big' },
      ),
    );
    expect(e.code).toBe('WRITECOORDINATOR_RESULT_NOT_SERIALISABLE');
    expect(values(db)).toEqual([]);
    await wc.close();
  });

  it('prunes recorded requests by count and by age', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t, { idempotency: { maxEntries: 10, maxAgeMs: 60_000 } });
    for (let i = 0; i < 30; i++) await wc.submit(() => i, { requestId: `p${i}` });
    const count = () => Number(db.prepare(`SELECT count(*) FROM ${REQUESTS_TABLE}`).pluck().get());
    // Pruned once more than maxEntries / 4 were recorded since the last prune.
    expect(count()).toBeLessThanOrEqual(10 + Math.ceil(10 / 4));
    expect(await wc.submit(() => -1, { requestId: 'p29' })).toMatchObject({ value: 29, replayed: true });
    // The oldest were pruned, so they run again.
    expect(await wc.submit(() => -1, { requestId: 'p0' })).toMatchObject({ value: -1, replayed: false });
    await wc.close();
    // Age: entries older than maxAgeMs go at the next start.
    db.prepare(`UPDATE ${REQUESTS_TABLE} SET created_at = created_at - 120000`).run();
    const wc2 = createWriteCoordinator({ database: db, idempotency: { maxAgeMs: 60_000 } });
    expect(count()).toBe(0);
    await wc2.close();
  });

  it('rejects an unusable requestId before queueing', async ({ tdb: t }) => {
    const { wc } = openCoordinator(t);
    expect((await rejection(wc.submit(() => 1, { requestId: '' }))).code).toBe(
      'WRITECOORDINATOR_INVALID_PARAMS',
    );
    expect((await rejection(wc.submit(() => 1, { requestId: 'x'.repeat(600) }))).code).toBe(
      'WRITECOORDINATOR_INVALID_PARAMS',
    );
    await wc.close();
  });
});
