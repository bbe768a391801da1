// TxRunner.sliced: which connection runs the work, and what an app write meets meanwhile.
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkerConnection } from '../../../src/client/internal/apply-worker.js';
import { startWrites } from '../../../src/client/internal/table-ops.js';
import { LONG_WORK_ROWS, SMALL_WORK_ROWS, TxRunner } from '../../../src/client/internal/writer.js';
import type { SqliteDb } from '../../../src/client/writer-types.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
beforeAll(async () => {
  dir = await tempDir('oversync-tx-runner');
});
afterAll(async () => {
  await dir.cleanup();
});

function open(name: string) {
  const db = new Database(join(dir.path, name));
  db.pragma('journal_mode = WAL');
  db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL)`);
  return db;
}

/** Spins for about `ms` (a slice of CPU-bound apply work), then yields; `steps` times. */
function* busyWork(db: SqliteDb, steps: number, ms: number): Generator<void, SqliteDb, undefined> {
  for (let i = 0; i < steps; i++) {
    db.prepare(`INSERT INTO t(who) VALUES ('apply')`).run();
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      // CPU-bound
    }
    yield;
  }
  return db;
}

describe('TxRunner.sliced', () => {
  it('runs small announced work as one transaction on the app connection', async () => {
    const db = open('small.db');
    const runner = new TxRunner(db, 'normal');
    const used = await runner.sliced((c) => busyWork(c, 3, 0), undefined, SMALL_WORK_ROWS);
    expect(used).toBe(db);
    const big = await runner.sliced((c) => busyWork(c, 3, 0), undefined, SMALL_WORK_ROWS + 1);
    expect(big).not.toBe(db);
    expect(db.prepare(`SELECT count(*) FROM t`).pluck().get()).toBe(6);
    db.close();
  });

  it('while a long apply holds the lock, an app write fails at once with SQLITE_BUSY; the timeout comes back after', async () => {
    const db = open('long.db');
    const before = Number(db.pragma('busy_timeout', { simple: true }));
    expect(before).toBeGreaterThan(0);
    const runner = new TxRunner(db, 'normal');
    const during: Array<{ busyTimeout: number; error: string | undefined; applyRowsSeen: number }> = [];
    let done = false;
    const work = runner
      .sliced((c) => busyWork(c, 40, 4))
      .finally(() => {
        done = true;
      });
    while (!done) {
      await nextTurn();
      if (done || !runner.busy) break;
      let error: string | undefined;
      try {
        db.prepare(`INSERT INTO t(who) VALUES ('app')`).run();
      } catch (e) {
        error = (e as { code?: string }).code;
      }
      during.push({
        busyTimeout: Number(db.pragma('busy_timeout', { simple: true })),
        error,
        applyRowsSeen: Number(db.prepare(`SELECT count(*) FROM t WHERE who = 'apply'`).pluck().get()),
      });
    }
    await work;
    // At least one app write met the held lock while the apply was under way; each such write
    // failed with SQLITE_BUSY, none waited (busy timeout 0), and the app never saw a part of the
    // apply. A long apply's COMMIT runs in a worker while the loop turns: a write between that
    // COMMIT and the end of `sliced` succeeds and sees the whole apply, and a write refused just
    // before the COMMIT landed may count the rows after it (all 40, never a part).
    const blocked = during.filter((d) => d.busyTimeout === 0);
    expect(blocked.filter((d) => d.error === 'SQLITE_BUSY' && d.applyRowsSeen === 0).length).toBeGreaterThan(
      0,
    );
    for (const d of blocked) {
      if (d.error === undefined) expect(d.applyRowsSeen).toBe(40);
      else {
        expect(d.error).toBe('SQLITE_BUSY');
        expect([0, 40]).toContain(d.applyRowsSeen);
      }
    }
    expect(Number(db.pragma('busy_timeout', { simple: true }))).toBe(before);
    expect(db.prepare(`SELECT count(*) FROM t WHERE who = 'apply'`).pluck().get()).toBe(40);
    db.prepare(`INSERT INTO t(who) VALUES ('app')`).run();
    db.close();
  });

  it('appWrite waits for a long apply to commit, then writes; the event loop turns meanwhile', async () => {
    const db = open('queued.db');
    const runner = new TxRunner(db, 'normal');
    let applyDone = false;
    const work = runner
      .sliced((c) => busyWork(c, 40, 4))
      .then(() => {
        applyDone = true;
      });
    // Let the apply take the lock and yield at least once.
    while (!runner.busy || Number(db.pragma('busy_timeout', { simple: true })) !== 0) await nextTurn();
    let turns = 0;
    const ticker = setInterval(() => turns++, 1);
    const written = await runner.appWrite((c) => {
      // Runs after the apply's COMMIT: its rows are visible, and the write cannot meet the lock.
      const seen = Number(c.prepare(`SELECT count(*) FROM t WHERE who = 'apply'`).pluck().get());
      c.prepare(`INSERT INTO t(who) VALUES ('app')`).run();
      return seen;
    });
    clearInterval(ticker);
    await work;
    expect(applyDone).toBe(true);
    expect(written).toBe(40);
    expect(turns).toBeGreaterThan(0);
    expect(db.prepare(`SELECT count(*) FROM t WHERE who = 'app'`).pluck().get()).toBe(1);
    db.close();
  });

  it('runs long work on the connection a worker thread owns, with the results and errors of a local one', async () => {
    const db = open('worker.db');
    db.exec(`CREATE TABLE b (id INTEGER PRIMARY KEY, data BLOB)`);
    const runner = new TxRunner(db, 'normal');
    const medium = await runner.sliced((c) => busyWork(c, 1, 0), undefined, LONG_WORK_ROWS);
    expect(medium).not.toBeInstanceOf(WorkerConnection);
    const seen = await runner.sliced(
      function* (c) {
        expect(c).toBeInstanceOf(WorkerConnection);
        const ins = c.prepare(`INSERT INTO b(id, data) VALUES (?, ?)`);
        for (let i = 0; i < 3; i++) {
          ins.run(i, Buffer.from([i, 255]));
          yield;
        }
        const changes = c
          .prepare(`UPDATE b SET data = ? WHERE id >= ?`)
          .run(Buffer.from('ab', 'hex'), 1).changes;
        const row = c.prepare(`SELECT id, data FROM b WHERE id = ?`).get(0) as { id: number; data: Buffer };
        const plucked = c.prepare(`SELECT data FROM b WHERE id = ?`).pluck().get(2);
        const raw = c.prepare(`SELECT id FROM b ORDER BY id`).raw().all();
        return { changes, row, plucked, raw, inTx: c.inTransaction };
      },
      undefined,
      LONG_WORK_ROWS + 1,
    );
    expect(seen.changes).toBe(2);
    expect(Buffer.isBuffer(seen.row.data) && seen.row.data.equals(Buffer.from([0, 255]))).toBe(true);
    expect(Buffer.isBuffer(seen.plucked) && (seen.plucked as Buffer).toString('hex')).toBe('ab');
    expect(seen.raw).toEqual([[0], [1], [2]]);
    expect(seen.inTx).toBe(true);
    expect(db.prepare(`SELECT count(*) FROM b`).pluck().get()).toBe(3);
    // an error of a write surfaces as better-sqlite3's SqliteError, and the whole transaction rolls back
    const failed = runner.sliced(function* (c) {
      c.prepare(`INSERT INTO b(id, data) VALUES (10, NULL)`).run();
      yield;
      c.prepare(`INSERT INTO b(id, data) VALUES (0, NULL)`).run();
      yield;
      return c.prepare(`SELECT count(*) FROM b`).pluck().get();
    });
    await expect(failed).rejects.toBeInstanceOf(Database.SqliteError);
    await expect(failed).rejects.toMatchObject({ code: 'SQLITE_CONSTRAINT_PRIMARYKEY' });
    expect(db.prepare(`SELECT count(*) FROM b`).pluck().get()).toBe(3);
    // the worker's connection is usable again after the rollback
    const after = await runner.sliced(function* (c) {
      yield;
      return c.prepare(`SELECT count(*) FROM b`).pluck().get();
    });
    expect(after).toBe(3);
    db.close();
  });
});

describe('TxRunner.sliced with work that waits for promises settled already', () => {
  it('still gives the event loop a turn once a slice has run its budget (a settled promise resumes without one)', async () => {
    const db = open('settled.db');
    const runner = new TxRunner(db, 'normal');
    let turnedDuringWork = false;
    let working = true;
    setImmediate(() => {
      turnedDuringWork = working;
    });
    // 20 steps of ~3 ms, each waiting for a promise settled already: ~60 ms with no wait at all
    const steps = await runner.sliced(
      function* (c) {
        let n = 0;
        for (let i = 0; i < 20; i++) {
          c.prepare(`INSERT INTO t(who) VALUES ('step')`).run();
          const t0 = performance.now();
          while (performance.now() - t0 < 3) {
            // CPU-bound
          }
          n += (yield Promise.resolve(1)) as number;
        }
        working = false;
        return n;
      },
      undefined,
      SMALL_WORK_ROWS + 1,
    );
    expect(steps).toBe(20);
    expect(turnedDuringWork).toBe(true);
    expect(db.prepare(`SELECT count(*) FROM t`).pluck().get()).toBe(20);
    db.close();
  });
});

describe('TxRunner.sliced with a write left in flight (a hydrate sends a batch and builds the next meanwhile)', () => {
  // Runs in the worker for a while, then inserts: still running when the generator fails.
  const slowInsert = {
    sql: `INSERT INTO t(who) SELECT 'in flight' FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) SELECT count(*) FROM c)`,
    args: [],
  };
  const failures = [
    ['the generator throws', () => Promise.resolve(), true],
    [
      'a promise it waits for (a page of the download) rejects',
      () => Promise.reject(new Error('page lost')),
      false,
    ],
  ] as const;
  for (const [what, page, throwsItself] of failures) {
    it(`${what}: the runner waits for the write, rolls back, and the connection serves the next transaction`, async () => {
      const db = open(`in-flight-${throwsItself}.db`);
      db.exec(`INSERT INTO t(who) VALUES ('before')`);
      const runner = new TxRunner(db, 'normal');
      let sent = 0;
      const failed = runner.sliced(
        function* (c) {
          expect(c).toBeInstanceOf(WorkerConnection);
          c.prepare(`INSERT INTO t(who) VALUES ('first')`).run();
          startWrites(c, [slowInsert]);
          sent++;
          if (throwsItself) throw new Error('page malformed');
          yield page();
          return 'not reached';
        },
        undefined,
        LONG_WORK_ROWS + 1,
        { waits: true },
      );
      await expect(failed).rejects.toThrow(throwsItself ? 'page malformed' : 'page lost');
      expect(sent).toBe(1);
      expect(db.prepare(`SELECT who FROM t ORDER BY id`).pluck().all()).toEqual(['before']);
      const after = await runner.sliced(
        function* (c) {
          expect(c).toBeInstanceOf(WorkerConnection);
          c.prepare(`INSERT INTO t(who) VALUES ('after')`).run();
          const [n] = yield* startWrites(c, [
            { sql: `INSERT INTO t(who) VALUES ('after, sent')`, args: [] },
          ])();
          yield;
          return n;
        },
        undefined,
        LONG_WORK_ROWS + 1,
      );
      expect(after).toBe(1);
      expect(db.prepare(`SELECT who FROM t ORDER BY id`).pluck().all()).toEqual([
        'before',
        'after',
        'after, sent',
      ]);
      db.close();
    });
  }
});

describe('WorkerConnection', () => {
  it('a worker that ends while a call is awaited: the call rejects, its transaction is rolled back, nothing waits for ever', async () => {
    const db = open('worker-exit.db');
    db.exec(`INSERT INTO t(who) VALUES ('before')`);
    const c = await WorkerConnection.open(db.name, { timeout: 5_000, pragmas: [] });
    expect(c).toBeInstanceOf(WorkerConnection);
    const w = c!;
    w.exec('BEGIN IMMEDIATE');
    w.exec(`INSERT INTO t(who) VALUES ('in the worker')`);
    // a statement that runs for a while in the worker, awaited while the event loop turns (a
    // terminate cannot cut a running SQLite statement: the thread ends when the statement does)
    const slow = w.runAsync([
      {
        sql: `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) SELECT count(*) FROM c`,
        args: [],
      },
    ]);
    await w.terminate();
    await expect(slow).rejects.toThrow(/no answer/);
    expect(w.open).toBe(false);
    expect(() => w.exec('SELECT 1')).toThrow(/not open/);
    // the worker's connection went with it: its transaction rolled back, the lock is free
    db.exec(`INSERT INTO t(who) VALUES ('after')`);
    expect(db.prepare(`SELECT who FROM t ORDER BY id`).pluck().all()).toEqual(['before', 'after']);
    db.close();
  });

  it('a worker that ends during a synchronous call (out of memory): the call throws instead of blocking the thread for ever', async () => {
    const db = open('worker-oom.db');
    db.exec(`INSERT INTO t(who) VALUES ('before')`);
    // A small heap for the worker, and a read whose rows it cannot hold: Node ends the worker.
    const c = await WorkerConnection.open(db.name, {
      timeout: 5_000,
      pragmas: [],
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    expect(c).toBeInstanceOf(WorkerConnection);
    const w = c!;
    w.exec('BEGIN IMMEDIATE');
    w.exec(`INSERT INTO t(who) VALUES ('in the worker')`);
    const huge = w.prepare(
      `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 300000) SELECT x, printf('%0200d', x) AS pad FROM c`,
    ) as unknown as { all(): unknown[] };
    // Without its supervisor thread this call waited for an answer that never comes: the main
    // thread's own 'exit' event cannot run while the call blocks it.
    expect(() => huge.all()).toThrow(/no answer/);
    expect(w.open).toBe(false);
    expect(() => w.exec('SELECT 1')).toThrow(/not open/);
    // the worker's connection went with it: its transaction rolled back, the lock is free
    db.exec(`INSERT INTO t(who) VALUES ('after')`);
    expect(db.prepare(`SELECT who FROM t ORDER BY id`).pluck().all()).toEqual(['before', 'after']);
    db.close();
  });
});
