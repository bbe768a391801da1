import fs from 'node:fs';
import { waitFor } from '@x/testkit';
import {
  createWriteCoordinator,
  DEFAULT_CHECKPOINT_WRITER_FALLBACK_PAGES,
  type SqliteDatabase,
} from '@x/writecoordinator';
import type Database from 'better-sqlite3';
import { describe, expect } from 'vitest';
import { it, openCoordinator } from '../helpers/db.js';

const autocheckpoint = (db: Database.Database): number =>
  Number(db.pragma('wal_autocheckpoint', { simple: true }));

/** Commits `batches` batches of 50 rows of 200 bytes each (about 2.5 pages of WAL per batch). */
async function writeBatches(wc: ReturnType<typeof openCoordinator>['wc'], batches: number): Promise<void> {
  for (let b = 0; b < batches; b++) {
    await Promise.all(
      Array.from({ length: 50 }, (_, k) =>
        wc.submit((db) => db.prepare('INSERT INTO items (v) VALUES (?)').run(`${b}:${k}:${'x'.repeat(200)}`)),
      ),
    );
  }
}

describe('background checkpoints', () => {
  it('a worker thread copies the WAL into the database while the writer does not checkpoint', async ({
    tdb: t,
  }) => {
    // The writer's fallback is far beyond what this test writes: only the worker can checkpoint.
    const { db, wc } = openCoordinator(t, { checkpoint: { intervalMs: 5, writerFallbackPages: 1_000_000 } });
    expect(autocheckpoint(db)).toBe(1000);
    const size0 = fs.statSync(t.path).size;
    await writeBatches(wc, 40);
    expect(autocheckpoint(db)).toBe(1_000_000);
    // Pages reach the database file only through a checkpoint (the worker announces none: polled).
    await waitFor(() => fs.statSync(t.path).size > size0 + 100_000, {
      timeoutMs: 5_000,
      what: 'the worker to checkpoint the WAL into the database file',
    });
    await wc.close();
    expect(autocheckpoint(db)).toBe(1000); // restored
    expect((db.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n).toBe(2000);
    // close() ended the worker's connection: the caller's close is the last one and removes the WAL.
    db.close();
    expect(fs.existsSync(`${t.path}-wal`)).toBe(false);
  });

  it('by default the writer keeps a raised wal_autocheckpoint as a fallback', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t);
    await writeBatches(wc, 1);
    expect(autocheckpoint(db)).toBe(DEFAULT_CHECKPOINT_WRITER_FALLBACK_PAGES);
    await wc.close();
    expect(autocheckpoint(db)).toBe(1000);
  });

  it('intervalMs 0 leaves checkpoints to SQLite in the writer', async ({ tdb: t }) => {
    const { db, wc } = openCoordinator(t, { checkpoint: { intervalMs: 0 } });
    await writeBatches(wc, 3);
    expect(autocheckpoint(db)).toBe(1000);
    await wc.close();
  });

  it('no background thread for a database that better-sqlite3 (as resolved here) did not open', async ({
    tdb: t,
  }) => {
    const db = t.open();
    db.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)');
    // A structural stand-in delegating to the real database: it may come from another SQLite build.
    const wrapped: SqliteDatabase = {
      prepare: (s) => db.prepare(s),
      exec: (s) => db.exec(s),
      pragma: (s, o) => db.pragma(s, o),
      transaction: (fn) => db.transaction(fn),
      get inTransaction() {
        return db.inTransaction;
      },
      get open() {
        return db.open;
      },
      get readonly() {
        return db.readonly;
      },
      get name() {
        return db.name;
      },
      close: () => db.close(),
    };
    const wc = createWriteCoordinator({ database: wrapped, checkpoint: { intervalMs: 5 } });
    await wc.submit((d) => d.prepare('INSERT INTO items (v) VALUES (?)').run('a'));
    expect(autocheckpoint(db)).toBe(1000);
    await wc.close();
  });
});
