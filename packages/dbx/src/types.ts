import type pg from 'pg';

/** What a query resolves with (of a multi-statement text, the last statement's result). */
export interface QueryResult<R> {
  /** The rows, as pg parsed them. */
  rows: R[];
  /** Rows returned or affected, as the server reported (0 when it reported none). */
  rowCount: number;
  /** The result's columns: name and type OID. */
  fields: Array<{ name: string; dataTypeID: number }>;
}

/** Per-call options of a statement. */
export interface QueryOptions {
  /** Cancels the statement (on the server too); the call rejects with DBX_QUERY_CANCELLED. */
  signal?: AbortSignal;
}

/** Per-call options of `query` / `queryRow` / `exec` (on a cluster's writer or a transaction). */
export interface StatementOptions extends QueryOptions {
  /**
   * Runs the statement as a named prepared statement (node-postgres's `name`): parsed and planned
   * once per connection, then only bound and executed, which saves PostgreSQL the planning of a
   * statement sent over and over. One name must always carry the same SQL text (node-postgres
   * refuses another, DBX_QUERY_FAILED); keep the number of names bounded, each holds a plan on
   * every connection that ran it. A single statement only.
   */
  name?: string;
}

/** What runs statements: a {@link Cluster} (on the writer) or a {@link Tx}. */
export interface Querier {
  /** Runs a statement and resolves with its rows; `params` are bound as `$1`, `$2`, ... */
  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<QueryResult<R>>;
  /** Runs a statement and resolves with its first row, or undefined when it returned none. */
  queryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<R | undefined>;
  /** Runs a statement (or several, without `params`) for its effect: the rows affected, summed. */
  exec(sql: string, params?: readonly unknown[], opts?: StatementOptions): Promise<{ rowCount: number }>;
}

/** A transaction's isolation level, as PostgreSQL names it. */
export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

/** Options of `runTx` and `begin`. */
export interface TxOptions {
  /** Default: the server's (`read committed` unless configured otherwise). */
  isolation?: IsolationLevel;
  /** `begin ... read only` (true) or `read write` (false); default the server's. */
  readOnly?: boolean;
  /** `deferrable` (with `serializable` and `readOnly`), or `not deferrable`; default the server's. */
  deferrable?: boolean;
  /** Cancels the transaction's statements; the transaction is rolled back. */
  signal?: AbortSignal;
  /** Attempts of the whole callback on 40001/40P01 (top-level runTx only); default `retry.maxAttempts`. */
  maxAttempts?: number;
}

/** A transaction on one primary connection, given to a `runTx` callback. */
export interface Tx extends Querier {
  /** A nested transaction: a savepoint, released on success and rolled back to on throw. */
  runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T>;
}

/** A transaction driven by hand (`begin()`): commit it, or roll it back. */
export interface TxHandle extends Tx {
  /** Commits; the handle is closed afterwards (DBX_TX_CLOSED on further use). */
  commit(): Promise<void>;
  /** Never fails on a dead connection (the server has rolled back then). */
  rollback(): Promise<void>;
  /** Rolls back unless committed: `await using tx = await cluster.begin()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Which nodes a read may use: the primary only, replicas only, or any healthy one. */
export type NodeClass = 'primary' | 'replica' | 'any';

/** Options of `readQuery` / `readQueryRow`. */
export interface ReadOptions extends QueryOptions {
  /** Which nodes may serve the read. */
  node?: NodeClass;
  /** Read-your-writes token (from `writeToken()`): only nodes that replayed it may serve the read. */
  token?: string;
  /** Lag bound for this read, over the cluster's `maxReplicaLagMs` (null = any lag). */
  maxLagMs?: number | null;
}

/** A node's role as last seen by a health check (`unknown` before the first one, or when down). */
export type NodeRole = 'primary' | 'replica' | 'unknown';

/** One node in {@link ClusterStats}. */
export interface NodeStats {
  /** The node's name (`primary`, `replica1`, ..., or the `name` of its config). */
  readonly name: string;
  /** Its role as last seen by a health check. */
  readonly role: NodeRole;
  /** Whether it may be used (not down after `failuresBeforeDown` failed checks). */
  readonly healthy: boolean;
  /** True for the node writes currently go to. */
  readonly writer: boolean;
  /** Connections in the node's pool. */
  readonly totalCount: number;
  /** Idle connections in the node's pool. */
  readonly idleCount: number;
  /** Callers waiting for a connection of the node's pool. */
  readonly waitingCount: number;
  /** Bytes of WAL the node is behind the primary (replicas; null until measured). */
  readonly lagBytes: number | null;
  /** Estimated replay delay in ms, measured against the primary's WAL positions (replicas; null until measured). */
  readonly lagMs: number | null;
  /** Duration of the last health check query. */
  readonly latencyMs: number | null;
  /** Last known WAL position: insert LSN for the primary, replay LSN for replicas. */
  readonly lsn: string | null;
  /** Health checks failed in a row. */
  readonly consecutiveFailures: number;
  /** When the last health check finished (epoch ms), null before the first. */
  readonly lastCheckAt: number | null;
  /** The last health-check or connection error, null when none. */
  readonly lastError: string | null;
  /** Queries served by this node since creation. */
  readonly queries: number;
  /** Failed queries on this node since creation. */
  readonly errors: number;
}

/** What `cluster.stats()` returns: a snapshot of every node and the cluster's counters. */
export interface ClusterStats {
  /** Every node, primary first. */
  readonly nodes: readonly NodeStats[];
  /** The name of the node writes go to, null when no healthy writer is known. */
  readonly writer: string | null;
  /** True once `close()` was called. */
  readonly closed: boolean;
  /** Retries made since creation. */
  readonly retries: number;
  /** Reads served by the primary because no replica was healthy and caught up. */
  readonly primaryFallbacks: number;
}

/** A node's role changed, or writes moved to another node (a failover or switchover). */
export interface RoleChangeEvent {
  /** The event's name. */
  readonly type: 'roleChange';
  /** The node whose role changed, or, for a writer switch, the new writer. */
  readonly node: string;
  /** The role before. */
  readonly from: NodeRole;
  /** The role after. */
  readonly to: NodeRole;
  /** Writer before and after, when the write target changed. */
  readonly previousWriter: string | null;
  /** The writer after the change (null: none known). */
  readonly writer: string | null;
}

/** A node went down (after `failuresBeforeDown` failed checks) or came back. */
export interface NodeStateEvent {
  /** The event's name. */
  readonly type: 'nodeDown' | 'nodeUp';
  /** The node's name. */
  readonly node: string;
  /** Its role as last seen. */
  readonly role: NodeRole;
  /** Why it went down (`nodeDown`). */
  readonly error?: string;
}

/** Any event of `cluster.on`. */
export type ClusterEvent = RoleChangeEvent | NodeStateEvent;

/** The events of `cluster.on`, by name. */
export interface ClusterEventMap {
  /** A node's role changed, or the writer did. */
  roleChange: RoleChangeEvent;
  /** A node is no longer used. */
  nodeDown: NodeStateEvent;
  /** A node is used again. */
  nodeUp: NodeStateEvent;
}

/**
 * A PostgreSQL cluster client (`createCluster`). `query`, `queryRow`, `exec`, `runTx` and `begin` go
 * to the writer; `readQuery` and `readQueryRow` to a healthy, caught-up replica, else the primary.
 */
export interface Cluster extends Querier {
  /** The validated options, every default filled in (frozen). */
  readonly options: Readonly<import('./options.js').ResolvedClusterOptions>;
  /** A read that a replica may serve: one healthy and within the lag bounds (and the read's token). */
  readQuery<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<QueryResult<R>>;
  /** `readQuery`'s first row, or undefined when it returned none. */
  readQueryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<R | undefined>;
  /**
   * Runs `fn` in a transaction on the writer: commits when it resolves, rolls back when it throws.
   * The whole callback is run again on a serialization failure or deadlock (`maxAttempts`).
   */
  runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T>;
  /** Opens a transaction driven by hand; `await using` rolls it back unless committed. */
  begin(opts?: TxOptions): Promise<TxHandle>;
  /** A raw pg client of the writer's pool (LISTEN, say); `release()` it when done. */
  connect(opts?: { signal?: AbortSignal }): Promise<pg.PoolClient>;
  /** `COPY ... FROM STDIN` on the writer, fed from `source`; resolves with the rows copied. */
  copyFrom(
    sql: string,
    source: AsyncIterable<string | Buffer> | NodeJS.ReadableStream,
    opts?: QueryOptions,
  ): Promise<number>;
  /** `COPY ... TO STDOUT` on the writer, as chunks of bytes. */
  copyTo(sql: string, opts?: QueryOptions): AsyncIterable<Buffer>;
  /** The rows of a query on the writer (on the transaction's connection inside `runTx`), fetched `batchSize` (default 100) at a time. */
  stream<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions & { batchSize?: number },
  ): AsyncIterable<R>;
  /** Runs `fn` in a read-your-writes scope; `token` seeds it (e.g. from an HTTP header). */
  session<T>(fn: () => Promise<T>, opts?: { token?: string | null }): Promise<T>;
  /** The read-your-writes token of the enclosing session (its last write's WAL position), null when none. */
  writeToken(): string | null;
  /** Resolves once a healthy writer is known (after a failover, say). */
  waitForPrimary(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void>;
  /** Runs a health check of every node now. */
  checkHealth(opts?: { signal?: AbortSignal }): Promise<void>;
  /** A snapshot of every node and the cluster's counters. */
  stats(): ClusterStats;
  /** Subscribes to an event; returns the function that unsubscribes. */
  on<E extends keyof ClusterEventMap>(event: E, listener: (e: ClusterEventMap[E]) => void): () => void;
  /** Stops health checks, waits up to `closeDrainTimeoutMs` for calls in flight, closes the pools. */
  close(): Promise<void>;
  /** `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}
