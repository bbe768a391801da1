/** What the client writes through: a better-sqlite3 database or a write coordinator (structural types). */
import type Database from 'better-sqlite3';

/**
 * The structural subset of better-sqlite3's Database the client uses. A coordinator's
 * `options.database` satisfies it too.
 */
export interface SqliteDb {
  prepare: Database.Database['prepare'];
  exec(sql: string): unknown;
  pragma(source: string, options?: { simple?: boolean }): unknown;
  transaction: Database.Database['transaction'];
  readonly inTransaction: boolean;
  readonly open: boolean;
  readonly name: string;
  readonly memory?: boolean;
}

/** The structural subset of an `@x/writecoordinator` coordinator the client uses. */
export interface CoordinatorLike {
  readonly options: { readonly database: unknown };
  runExclusive<T>(
    fn: (db: unknown) => T,
    opts?: { signal?: AbortSignal; durability?: 'normal' | 'full' },
  ): Promise<{ value: T }>;
  submit: (...args: never[]) => Promise<unknown>;
  /**
   * Optional: a read of committed state that does not queue behind writes (e.g. dbproxy's
   * `read`). Without it the client reads in a deferred transaction on `options.database` when no
   * transaction is open there, and as an exclusive job only when one is.
   */
  read?<T>(fn: (db: never) => T, opts?: { signal?: AbortSignal }): Promise<T>;
}

export type SyncWriter = SqliteDb | CoordinatorLike;
