/** The public types of `@x/dbproxy`: the proxy's interface, its call options and results, its metrics and change events. */
import type { SqliteDatabase, WriteCoordinatorMetrics } from '@x/writecoordinator';
import type { ResolvedDbProxyOptions } from './options.js';

/** One committed write, as `changes()` yields it. */
export interface WriteChange {
  type: 'write';
  /** The commit sequence (the coordinator's); writes committed together share it. */
  seq: number;
  /** The primary's epoch when it committed. */
  epoch: number;
  method: string | null;
  requestId: string | null;
  sourceInstanceId: string | null;
}

/**
 * Commits in `(afterSeq, toSeq]` happened but could not be delivered (missed publications that the
 * primary no longer had, a failover, or a full iterator buffer). Re-read whatever state you derive.
 */
export interface GapChange {
  type: 'gap';
  afterSeq: number;
  toSeq: number;
}

export type ChangeEvent = WriteChange | GapChange;

export type Role = 'starting' | 'primary' | 'secondary' | 'closed';

export interface RoleChange {
  role: Role;
  previous: Role;
  /** The epoch of the primary this process now follows or is (0 before any). */
  epoch: number;
}

export interface WriteOptions {
  signal?: AbortSignal;
  /** Idempotency key of the logical write; reuse it when you retry. Default: a fresh UUID. */
  requestId?: string;
  /** Overrides the method's timeout for this call. */
  timeoutMs?: number;
  /** `'full'` commits this write's batch under `synchronous = FULL`. */
  durability?: 'normal' | 'full';
}

export interface WriteResult<T> {
  value: T;
  /** The commit sequence; pass it as `read({ minSeq })` anywhere to see this write. */
  seq: number;
  /** True when the write had already been applied under this requestId (its stored result came back). */
  replayed: boolean;
}

export interface ExclusiveOptions {
  signal?: AbortSignal;
  /**
   * Idempotency key: a transaction already committed under it is not run again, its stored result comes
   * back with `replayed: true` (the result must then be JSON-serialisable). Default: none.
   */
  requestId?: string;
  /** How long the transaction may wait in the queue before it must have started; default `timeouts.longMs`. */
  timeoutMs?: number;
  /** `'full'` commits this transaction under `synchronous = FULL`. */
  durability?: 'normal' | 'full';
}

export interface ReadOptions {
  signal?: AbortSignal;
  /** Wait until the local connection sees this commit sequence. Default: this process's last write. */
  minSeq?: number;
  /** How long to wait for `minSeq`; default `timeouts.defaultMs`. */
  timeoutMs?: number;
}

export interface MethodMetrics {
  count: number;
  ok: number;
  /** Failures by error code. */
  errors: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
}

export interface DbProxyMetrics {
  role: Role;
  epoch: number;
  instanceId: string;
  /** Writes of this process not yet settled. */
  inFlight: number;
  /** Re-sends and retries after a lost link or a retryable error. */
  retries: number;
  /** Times this process moved to a newer primary (by promotion or by following one). */
  failovers: number;
  /** Times this process became primary. */
  promotions: number;
  /** Stalled primaries this process ended (SIGKILL) to take over. */
  stalledPrimariesEnded: number;
  /** Highest commit sequence delivered to this process. */
  seq: number;
  methods: Record<string, MethodMetrics>;
  /** On the primary: requests served for other processes. */
  served: { requests: number; errors: number };
  /** On the primary: the coordinator's snapshot. */
  coordinator: WriteCoordinatorMetrics | null;
}

export interface DbProxy {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly role: Role;
  readonly epoch: number;
  readonly instanceId: string;
  /** Highest commit sequence of this process's own writes (the default `minSeq` of `read`). */
  readonly lastWriteSeq: number;
  /** Joins the election; memoised. `write`, `read` and `changes` call it for you. */
  start(opts?: { signal?: AbortSignal }): Promise<void>;
  write<T = unknown>(method: string, params: unknown, opts?: WriteOptions): Promise<WriteResult<T>>;
  /**
   * Primary only: runs the synchronous `fn` on the primary's writer connection in a transaction of its
   * own (BEGIN IMMEDIATE..COMMIT, never batched with other writes), in queue order with every local and
   * forwarded write; its commit gets a sequence and is published like any other. Rejects with
   * `DBPROXY_NOT_PRIMARY` elsewhere. If `fn` throws, the transaction is rolled back and that error comes back.
   */
  runExclusive<T>(fn: (db: SqliteDatabase) => T, opts?: ExclusiveOptions): Promise<WriteResult<T>>;
  read<T>(fn: (db: SqliteDatabase) => T, opts?: ReadOptions): Promise<T>;
  changes(opts?: { signal?: AbortSignal }): AsyncIterable<ChangeEvent>;
  onRoleChange(listener: (e: RoleChange) => void): () => void;
  metrics(): DbProxyMetrics;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** The `metrics().methods` bucket of `runExclusive` transactions. */
export const EXCLUSIVE_METRICS_KEY = '(exclusive)';
