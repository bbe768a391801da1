// TxRunner.sliced: which connection runs the work, and what an app write meets meanwhile.
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SMALL_WORK_ROWS, TxRunner } from '../../../src/client/internal/writer.js';
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
    // At least one app write met the held lock; each such write failed with SQLITE_BUSY, none waited
    // (busy timeout 0), and the app never saw a row of the uncommitted apply.
    const blocked = during.filter((d) => d.busyTimeout === 0);
    expect(blocked.length).toBeGreaterThan(0);
    for (const d of blocked) expect(d).toEqual({ busyTimeout: 0, error: 'SQLITE_BUSY', applyRowsSeen: 0 });
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
});
