/**
 * The structural SQLite types the coordinator takes: the subset of better-sqlite3 it relies on.
 * The package never imports better-sqlite3 itself.
 */

/** The run result of a statement (better-sqlite3's `RunResult`). */
export interface SqliteRunResult {
  changes: number;
  lastInsertRowid: number | bigint;
}

/** The subset of a better-sqlite3 `Statement` the coordinator and its jobs rely on. */
export interface SqliteStatement {
  run(...params: unknown[]): SqliteRunResult;
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  iterate(...params: unknown[]): IterableIterator<unknown>;
}

/**
 * The structural subset of better-sqlite3's `Database` the coordinator needs. A better-sqlite3
 * `Database` opened read-write satisfies it; the package never imports better-sqlite3 itself.
 */
export interface SqliteDatabase {
  prepare(source: string): SqliteStatement;
  exec(source: string): unknown;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: mirrors better-sqlite3's own signature so its Database is assignable
  transaction<F extends (...args: any[]) => unknown>(fn: F): (...args: any[]) => ReturnType<F>;
  readonly inTransaction: boolean;
  readonly open: boolean;
  readonly readonly: boolean;
  readonly name: string;
  close(): unknown;
}
