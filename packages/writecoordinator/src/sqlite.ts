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
  /** Runs the statement with `params` bound; returns the rows changed and the last rowid. */
  run(...params: unknown[]): SqliteRunResult;
  /** The first row of the result (`undefined` when there is none). */
  get(...params: unknown[]): unknown;
  /** Every row of the result. */
  all(...params: unknown[]): unknown[];
  /** The rows of the result, one at a time. */
  iterate(...params: unknown[]): IterableIterator<unknown>;
}

/**
 * The structural subset of better-sqlite3's `Database` the coordinator needs. A better-sqlite3
 * `Database` opened read-write satisfies it; the package never imports better-sqlite3 itself.
 */
export interface SqliteDatabase {
  /** Compiles one SQL statement. */
  prepare(source: string): SqliteStatement;
  /** Runs a string of SQL statements, without parameters. */
  exec(source: string): unknown;
  /** Runs `PRAGMA source`; with `simple: true` returns the first column of the first row. */
  pragma(source: string, options?: { simple?: boolean }): unknown;
  /**
   * Wraps `fn` in a transaction: the returned function runs it between `BEGIN` and `COMMIT` (a
   * savepoint when a transaction is already open) and rolls back if it throws.
   *
   * @typeParam F - the wrapped function
   */
  // biome-ignore lint/suspicious/noExplicitAny: mirrors better-sqlite3's own signature so its Database is assignable
  transaction<F extends (...args: any[]) => unknown>(fn: F): (...args: any[]) => ReturnType<F>;
  readonly inTransaction: boolean;
  readonly open: boolean;
  readonly readonly: boolean;
  readonly name: string;
  /** Closes the connection. The coordinator never calls it: the database is the caller's. */
  close(): unknown;
}
