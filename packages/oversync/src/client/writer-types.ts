/** What the client writes through: a better-sqlite3 database or a write coordinator (structural types). */
import type Database from 'better-sqlite3';

/**
 * The structural subset of better-sqlite3's Database the client uses. A coordinator's
 * `options.database` satisfies it too.
 */
export interface SqliteDb {
  /** Compiles a statement (better-sqlite3's `prepare`). */
  prepare: Database.Database['prepare'];
  /** Runs one or more statements without parameters. */
  exec(sql: string): unknown;
  /** Runs a PRAGMA (`simple` returns the first column of the first row). */
  pragma(source: string, options?: { simple?: boolean }): unknown;
  /** Wraps a function in a transaction (better-sqlite3's `transaction`). */
  transaction: Database.Database['transaction'];
  readonly inTransaction: boolean;
  readonly open: boolean;
  readonly name: string;
  readonly memory?: boolean;
}

/** The structural subset of an `@x/writecoordinator` coordinator the client uses. */
export interface CoordinatorLike {
  readonly options: { readonly database: unknown };
  /** Runs `fn` alone on the coordinator's database, inside its transaction, at the given durability. */
  runExclusive<T>(
    fn: (db: unknown) => T,
    opts?: { signal?: AbortSignal; durability?: 'normal' | 'full' },
  ): Promise<{ value: T }>;
  /** The coordinator's job submission (only its presence is checked: it identifies a coordinator). */
  submit: (...args: never[]) => Promise<unknown>;
  /**
   * Optional: a read of committed state that does not queue behind writes (e.g. dbproxy's
   * `read`). Without it the client reads in a deferred transaction on `options.database` when no
   * transaction is open there, and as an exclusive job only when one is.
   */
  read?<T>(fn: (db: never) => T, opts?: { signal?: AbortSignal }): Promise<T>;
}

/** What the client's `writer` option takes: a better-sqlite3 database or a write coordinator. */
export type SyncWriter = SqliteDb | CoordinatorLike;
