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

/** What a `changes()` iterator yields: one committed write, or a gap of commits it could not deliver. */
export type ChangeEvent = WriteChange | GapChange;

/**
 * A process's part: `'starting'` until it has joined the election, `'primary'` while it holds the
 * election lock and owns the writer, `'secondary'` while it forwards its writes to a primary,
 * `'closed'` after `close()`.
 */
export type Role = 'starting' | 'primary' | 'secondary' | 'closed';

/** What `onRoleChange` listeners get when this process's {@link Role} changes. */
export interface RoleChange {
  /** The new role. */
  role: Role;
  /** The role before. */
  previous: Role;
  /** The epoch of the primary this process now follows or is (0 before any). */
  epoch: number;
}

/** The options of one `write`. */
export interface WriteOptions {
  /** Aborting rejects the write with `signal.reason` (see `applied` on whether it took effect). */
  signal?: AbortSignal;
  /** Idempotency key of the logical write; reuse it when you retry. Default: a fresh UUID. */
  requestId?: string;
  /** Overrides the method's timeout for this call. */
  timeoutMs?: number;
  /** `'full'` commits this write's batch under `synchronous = FULL`. */
  durability?: 'normal' | 'full';
}

/** What a write (or `runExclusive`) resolves to once committed. */
export interface WriteResult<T> {
  /** What the handler returned (for a replay: the recorded result, read back from JSON). */
  value: T;
  /** The commit sequence; pass it as `read({ minSeq })` anywhere to see this write. */
  seq: number;
  /** True when the write had already been applied under this requestId (its stored result came back). */
  replayed: boolean;
}

/** The options of one `runExclusive`. */
export interface ExclusiveOptions {
  /** Aborting drops the transaction while it is still queued (rejects with `signal.reason`). */
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

/** The options of one `read`. */
export interface ReadOptions {
  /** Aborting stops the wait for `minSeq` (rejects with `signal.reason`). */
  signal?: AbortSignal;
  /** Wait until the local connection sees this commit sequence. Default: this process's last write. */
  minSeq?: number;
  /** How long to wait for `minSeq`; default `timeouts.defaultMs`. */
  timeoutMs?: number;
}

/**
 * This process's calls of one write method (or of `runExclusive`, under
 * {@link EXCLUSIVE_METRICS_KEY}; names not in `writes` share the bucket `'(unknown)'`).
 */
export interface MethodMetrics {
  /** Calls made. */
  count: number;
  /** Calls that succeeded. */
  ok: number;
  /** Failures by error code. */
  errors: Record<string, number>;
  /** Median call latency over the latest calls, milliseconds. */
  p50Ms: number;
  /** 99th-percentile call latency over the latest calls, milliseconds. */
  p99Ms: number;
}

/** A snapshot of this process's proxy, returned by `metrics()`. */
export interface DbProxyMetrics {
  /** Its role now. */
  role: Role;
  /** The epoch of the primary it follows or is. */
  epoch: number;
  /** Its `instanceId`. */
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
  /** Per write method: this process's calls. */
  methods: Record<string, MethodMetrics>;
  /** On the primary: requests served for other processes. */
  served: { requests: number; errors: number };
  /** On the primary: the coordinator's snapshot. */
  coordinator: WriteCoordinatorMetrics | null;
}

/**
 * One process's handle on a SQLite file shared by many processes, made by `createDbProxy`: writes
 * go to the elected primary's writer (this process's own when it is the primary), reads run on this
 * process's read-only connection.
 */
export interface DbProxy {
  /** The options it runs with, defaults filled in, frozen. */
  readonly options: Readonly<ResolvedDbProxyOptions>;
  /** This process's role now. */
  readonly role: Role;
  /** The epoch of the primary this process follows or is (bumped at each promotion, persisted). */
  readonly epoch: number;
  /** This process's id in request metadata and change events. */
  readonly instanceId: string;
  /** Highest commit sequence of this process's own writes (the default `minSeq` of `read`). */
  readonly lastWriteSeq: number;
  /** Joins the election; memoised. `write`, `read` and `changes` call it for you. */
  start(opts?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Runs the named write `method` with `params` on the primary, retrying retryable failures with the
   * same `requestId` until its deadline (`timeoutMs`, else the method's timeout); resolves once it
   * has committed. Rejects with a `DbProxyError` whose `applied` says whether it may have taken
   * effect.
   */
  write<T = unknown>(method: string, params: unknown, opts?: WriteOptions): Promise<WriteResult<T>>;
  /**
   * Primary only: runs the synchronous `fn` on the primary's writer connection in a transaction of its
   * own (BEGIN IMMEDIATE..COMMIT, never batched with other writes), in queue order with every local and
   * forwarded write; its commit gets a sequence and is published like any other. Rejects with
   * `DBPROXY_NOT_PRIMARY` elsewhere. If `fn` throws, the transaction is rolled back and that error comes back.
   */
  runExclusive<T>(fn: (db: SqliteDatabase) => T, opts?: ExclusiveOptions): Promise<WriteResult<T>>;
  /**
   * Runs the synchronous `fn` in one read transaction on this process's read-only connection, once
   * that connection sees commit `minSeq` (default: this process's last write, so it reads its own
   * writes). Rejects with `DBPROXY_TIMEOUT` if it does not within `timeoutMs`.
   */
  read<T>(fn: (db: SqliteDatabase) => T, opts?: ReadOptions): Promise<T>;
  /**
   * Every commit of the file, from any process, in sequence order: one {@link WriteChange} per
   * committed write, or a {@link GapChange} for commits it could not deliver. Never throws: an
   * aborted signal or a closed proxy fails the iterator's first `next()`.
   */
  changes(opts?: { signal?: AbortSignal }): AsyncIterable<ChangeEvent>;
  /** Calls `listener` on each change of this process's role; returns the function that unsubscribes. */
  onRoleChange(listener: (e: RoleChange) => void): () => void;
  /** A snapshot of this process's counters (and, on the primary, its coordinator's). */
  metrics(): DbProxyMetrics;
  /**
   * Stops intake (later calls: `DBPROXY_CLOSED`), lets queued and outstanding writes finish within
   * `drainTimeoutMs`, steps down if primary (publishing `bye`), releases the election lock, closes
   * the connections and ends `changes()` iterators. Idempotent: every call returns the same promise.
   */
  close(): Promise<void>;
  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The `metrics().methods` bucket of `runExclusive` transactions. */
export const EXCLUSIVE_METRICS_KEY = '(exclusive)';
