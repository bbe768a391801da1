/**
 * The structural subset of an `@x/dbx` `Cluster` the sync service uses. Any object with these
 * methods works (kysely's "take an interface, not the driver's class").
 */
export interface SyncQueryResult<R> {
  rows: R[];
  rowCount: number | null;
}
/** What runs a statement: the cluster itself, or the transaction handle `runTx` passes. */
export interface SyncQuerier {
  /**
   * Runs one parameterized statement (`$1`, `$2`, ...) and resolves to its rows. `opts.name`
   * marks a statement sent over and over, to run as a named prepared statement (an `@x/dbx`
   * cluster's and node-postgres's `name`: planned once per connection); a querier may ignore it.
   */
  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: { signal?: AbortSignal; name?: string },
  ): Promise<SyncQueryResult<R>>;
}
/** How `runTx` runs its transaction: isolation, read-only, abort signal, attempts on serialization failures and deadlocks. */
export interface SyncTxOptions {
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  readOnly?: boolean;
  signal?: AbortSignal;
  maxAttempts?: number;
}
/** A dedicated connection (LISTEN for the watch endpoint): the subset of a `pg.PoolClient` used. */
export interface SyncListenClient {
  query(sql: string): Promise<unknown>;
  on(
    event: 'notification',
    listener: (msg: { channel: string; payload?: string | undefined }) => void,
  ): unknown;
  on(event: 'error' | 'end', listener: (err?: Error) => void): unknown;
  removeAllListeners(event?: string): unknown;
  release(err?: Error | boolean): void;
}
/** The database of a sync service: an `@x/dbx` `Cluster`, or any object with these methods. */
export interface SyncDatabase extends SyncQuerier {
  /** Runs `fn` in one transaction on the primary; commits when it resolves, rolls back when it throws. */
  runTx<T>(fn: (tx: SyncQuerier) => Promise<T>, opts?: SyncTxOptions): Promise<T>;
  /** A dedicated primary connection (an `@x/dbx` cluster's `connect()`, a pg `PoolClient`). */
  connect?(opts?: { signal?: AbortSignal }): Promise<unknown>;
}
