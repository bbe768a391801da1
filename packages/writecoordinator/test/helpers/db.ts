import { tempSqlite } from '@x/testkit';
import {
  createWriteCoordinator,
  type WriteCoordinator,
  type WriteCoordinatorOptions,
} from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { test as base } from 'vitest';

export interface TestDb {
  readonly dir: string;
  readonly path: string;
  open(): Database.Database;
  cleanup(): Promise<void>;
}

/** A real SQLite file in a fresh temp directory (testkit); cleanup closes what was opened. */
export async function tempDb(name = 'wc.db'): Promise<TestDb> {
  const tmp = await tempSqlite(name);
  const opened: Database.Database[] = [];
  return {
    dir: tmp.dir,
    path: tmp.path,
    open() {
      const db = new Database(tmp.path);
      opened.push(db);
      return db;
    },
    async cleanup() {
      for (const db of opened) if (db.open) db.close();
      await tmp.cleanup();
    },
  };
}

/** Opens a database with an `items(id INTEGER PRIMARY KEY, v TEXT UNIQUE)` table and a coordinator over it. */
export function openCoordinator(
  t: TestDb,
  options: Omit<WriteCoordinatorOptions, 'database'> = {},
): { db: Database.Database; wc: WriteCoordinator } {
  const db = t.open();
  db.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)');
  const wc = createWriteCoordinator({ ...options, database: db });
  return { db, wc };
}

export function insert(v: string) {
  return (db: { prepare(s: string): { run(...a: unknown[]): { lastInsertRowid: number | bigint } } }) =>
    Number(db.prepare('INSERT INTO items (v) VALUES (?)').run(v).lastInsertRowid);
}

export function values(db: Database.Database): string[] {
  return (db.prepare('SELECT v FROM items ORDER BY id').all() as Array<{ v: string }>).map((r) => r.v);
}

/** `it` with a `tdb` fixture: a fresh temp SQLite file per test, cleaned up (databases closed) after it. */
export const it = base.extend<{ tdb: TestDb }>({
  // biome-ignore lint/correctness/noEmptyPattern: vitest fixtures take a destructured first argument
  tdb: async ({}, use) => {
    const t = await tempDb();
    await use(t);
    await t.cleanup();
  },
});
