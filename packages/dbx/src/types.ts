import type pg from 'pg';

export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
  fields: Array<{ name: string; dataTypeID: number }>;
}

export interface QueryOptions {
  signal?: AbortSignal;
}

export interface Querier {
  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions,
  ): Promise<QueryResult<R>>;
  queryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions,
  ): Promise<R | undefined>;
  exec(sql: string, params?: readonly unknown[], opts?: QueryOptions): Promise<{ rowCount: number }>;
}

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

export interface TxOptions {
  isolation?: IsolationLevel;
  readOnly?: boolean;
  deferrable?: boolean;
  signal?: AbortSignal;
  /** Attempts of the whole callback on 40001/40P01 (top-level runTx only); default `retry.maxAttempts`. */
  maxAttempts?: number;
}

export interface Tx extends Querier {
  /** A nested transaction: a savepoint, released on success and rolled back to on throw. */
  runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T>;
}

export interface TxHandle extends Tx {
  commit(): Promise<void>;
  /** Never fails on a dead connection (the server has rolled back then). */
  rollback(): Promise<void>;
  /** Rolls back unless committed: `await using tx = await cluster.begin()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

export type NodeClass = 'primary' | 'replica' | 'any';

export interface ReadOptions extends QueryOptions {
  node?: NodeClass;
  /** Read-your-writes token (from `writeToken()`): only nodes that replayed it may serve the read. */
  token?: string;
  /** Lag bound for this read, over the cluster's `maxReplicaLagMs` (null = any lag). */
  maxLagMs?: number | null;
}

export type NodeRole = 'primary' | 'replica' | 'unknown';

export interface NodeStats {
  readonly name: string;
  readonly role: NodeRole;
  readonly healthy: boolean;
  /** True for the node writes currently go to. */
  readonly writer: boolean;
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
  /** Bytes of WAL the node is behind the primary (replicas; null until measured). */
  readonly lagBytes: number | null;
  /** Estimated replay delay in ms, measured against the primary's WAL positions (replicas; null until measured). */
  readonly lagMs: number | null;
  /** Duration of the last health check query. */
  readonly latencyMs: number | null;
  /** Last known WAL position: insert LSN for the primary, replay LSN for replicas. */
  readonly lsn: string | null;
  readonly consecutiveFailures: number;
  readonly lastCheckAt: number | null;
  readonly lastError: string | null;
  /** Queries served by this node since creation. */
  readonly queries: number;
  readonly errors: number;
}

export interface ClusterStats {
  readonly nodes: readonly NodeStats[];
  readonly writer: string | null;
  readonly closed: boolean;
  readonly retries: number;
  readonly primaryFallbacks: number;
}

export interface RoleChangeEvent {
  readonly type: 'roleChange';
  /** The node whose role changed, or, for a writer switch, the new writer. */
  readonly node: string;
  readonly from: NodeRole;
  readonly to: NodeRole;
  /** Writer before and after, when the write target changed. */
  readonly previousWriter: string | null;
  readonly writer: string | null;
}

export interface NodeStateEvent {
  readonly type: 'nodeDown' | 'nodeUp';
  readonly node: string;
  readonly role: NodeRole;
  readonly error?: string;
}

export type ClusterEvent = RoleChangeEvent | NodeStateEvent;

export interface ClusterEventMap {
  roleChange: RoleChangeEvent;
  nodeDown: NodeStateEvent;
  nodeUp: NodeStateEvent;
}

export interface Cluster extends Querier {
  readonly options: Readonly<import('./options.js').ResolvedClusterOptions>;
  readQuery<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<QueryResult<R>>;
  readQueryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<R | undefined>;
  runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T>;
  begin(opts?: TxOptions): Promise<TxHandle>;
  connect(opts?: { signal?: AbortSignal }): Promise<pg.PoolClient>;
  copyFrom(
    sql: string,
    source: AsyncIterable<string | Buffer> | NodeJS.ReadableStream,
    opts?: QueryOptions,
  ): Promise<number>;
  copyTo(sql: string, opts?: QueryOptions): AsyncIterable<Buffer>;
  stream<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions & { batchSize?: number },
  ): AsyncIterable<R>;
  /** Runs `fn` in a read-your-writes scope; `token` seeds it (e.g. from an HTTP header). */
  session<T>(fn: () => Promise<T>, opts?: { token?: string | null }): Promise<T>;
  writeToken(): string | null;
  /** Resolves once a healthy writer is known (after a failover, say). */
  waitForPrimary(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void>;
  /** Runs a health check of every node now. */
  checkHealth(opts?: { signal?: AbortSignal }): Promise<void>;
  stats(): ClusterStats;
  on<E extends keyof ClusterEventMap>(event: E, listener: (e: ClusterEventMap[E]) => void): () => void;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
