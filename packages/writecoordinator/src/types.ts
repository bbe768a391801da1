import type { z } from 'zod';
import type { ResolvedWriteCoordinatorOptions } from './options.js';
import type { SqliteDatabase } from './sqlite.js';

/**
 * How a batch commits: `'normal'` under `synchronous = NORMAL` (in WAL mode a commit can be lost to
 * a power failure, never corrupted), `'full'` under `synchronous = FULL` (durable once the promise
 * resolves).
 */
export type Durability = 'normal' | 'full';

/** A write job: a synchronous function of the database. It must not return a Promise. */
export type JobFn<T> = (db: SqliteDatabase) => T;

/** A named write, dispatched through the handler registered for `method`. */
export interface NamedJob {
  method: string;
  params: unknown;
}

/** The options of one `submit` or `runExclusive`: cancelling, a deadline, idempotency and durability. */
export interface SubmitOptions {
  /** Aborting removes the job while it is still queued (or waiting for queue space). */
  signal?: AbortSignal;
  /** Epoch milliseconds. A job still queued at its deadline is rejected with `WRITECOORDINATOR_EXPIRED`. */
  deadline?: number;
  /** Idempotency key: a second submit with the same id returns the recorded result without running. */
  requestId?: string;
  /** `'full'` makes the job's whole batch commit under `synchronous = FULL`. */
  durability?: Durability;
}

/** What a submitted job resolves to once its batch has committed (or its request id was replayed). */
export interface WriteResult<T> {
  /** What the job returned (for a replay: the recorded result read back from JSON). */
  value: T;
  /** The commit sequence of the batch the job committed in. */
  seq: number;
  /** True when the result came from the idempotency table and the job did not run. */
  replayed: boolean;
}

/**
 * One committed batch, as given to `subscribe` listeners and `changes()` iterators: its sequence and
 * the jobs that committed in it (replays and failed jobs are not listed).
 */
export interface CommitEvent {
  /** The commit sequence of the batch. */
  seq: number;
  /** Each committed job: its method (null for a function job) and its request id (null when none). */
  jobs: Array<{ method: string | null; requestId: string | null }>;
}

/** A consistent snapshot of the coordinator's counters, returned by `metrics()`. */
export interface WriteCoordinatorMetrics {
  /** Jobs admitted (passed validation and got a queue slot, or were expired on arrival). */
  accepted: number;
  /** Jobs that resolved (ran and committed, or were replayed). */
  completed: number;
  /** Of `completed`, how many came from the idempotency table. */
  replayed: number;
  /** Jobs that ran and failed, or whose batch failed to commit. */
  failed: number;
  /** Jobs rejected with `WRITECOORDINATOR_EXPIRED` (never ran). */
  expired: number;
  /** Queued jobs removed by their signal (never ran). */
  aborted: number;
  /** Submits refused at intake: queue full, closed, pre-aborted signal, unknown method, invalid params. */
  rejected: number;
  /** Queued jobs rejected with `WRITECOORDINATOR_SHUTTING_DOWN` at close (never ran). */
  dropped: number;
  /** Jobs queued now, waiting for the writer loop. */
  queueDepth: number;
  /** The largest `queueDepth` seen. */
  maxQueueDepth: number;
  /** Submitters waiting for queue space now. */
  waiting: number;
  /** Committed batches (each advanced `seq` by one). */
  batches: number;
  /** Mean number of jobs run per committed batch. */
  meanBatchSize: number;
  /** Batches that needed the savepoint re-run because a job failed. */
  isolatedBatches: number;
  /** Submit→settle latency of the most recent jobs (bounded reservoir), milliseconds. */
  p50LatencyMs: number;
  /** Submit→settle latency at the 99th percentile, over the same jobs, milliseconds. */
  p99LatencyMs: number;
  /** Last committed sequence. */
  seq: number;
}

/**
 * The single writer of one SQLite database, made by `createWriteCoordinator`: jobs submitted to it
 * run one batch at a time in the writer loop, and resolve once their batch has committed.
 */
export interface WriteCoordinator {
  /** The options it runs with, defaults filled in, frozen. */
  readonly options: Readonly<ResolvedWriteCoordinatorOptions>;
  /** Last committed sequence. */
  readonly seq: number;
  /**
   * Registers the handler of a named write: a later `submit({ method, params })` parses `params`
   * with `paramsSchema` and runs `handler` with the result. Throws WRITECOORDINATOR_METHOD_EXISTS
   * when `method` is already registered, WRITECOORDINATOR_INVALID_PARAMS for an empty name.
   */
  register<P>(
    method: string,
    paramsSchema: z.ZodType<P>,
    handler: (db: SqliteDatabase, params: P) => unknown,
  ): void;
  /**
   * Queues a job (a function of the database, or a registered method with its params); it runs in
   * a batch with other jobs, in one transaction. Resolves once the batch has committed; rejects
   * when the job throws (its work is rolled back, the other jobs of the batch still commit) or is
   * refused (queue full, closed, expired, aborted, unknown method, invalid params).
   */
  submit<T>(job: JobFn<T> | NamedJob, opts?: SubmitOptions): Promise<WriteResult<T>>;
  /** Runs `fn` in its own `BEGIN IMMEDIATE … COMMIT`, alone, in queue order. */
  runExclusive<T>(fn: JobFn<T>, opts?: SubmitOptions): Promise<WriteResult<T>>;
  /**
   * Calls `listener` synchronously after each commit with its {@link CommitEvent}; what it throws is
   * logged and ignored. Returns the function that unsubscribes. Listeners are dropped at close.
   */
  subscribe(listener: (e: CommitEvent) => void): () => void;
  /**
   * The commit events as an async iterator, buffered up to `changesBufferSize` events: a consumer
   * that falls further behind gets WRITECOORDINATOR_CHANGES_OVERFLOW. Ends at close; aborting
   * `signal` fails it with the signal's reason.
   */
  changes(opts?: { signal?: AbortSignal }): AsyncIterable<CommitEvent>;
  /** A snapshot of the counters now. */
  metrics(): WriteCoordinatorMetrics;
  /**
   * Stops intake (later submits: WRITECOORDINATOR_CLOSED), rejects submitters waiting for queue
   * space, lets queued jobs run for up to `drainTimeoutMs` (default: the option) and rejects the
   * rest with WRITECOORDINATOR_SHUTTING_DOWN, then ends the change streams. Never closes the
   * database. Idempotent: every call returns the same promise.
   */
  close(opts?: { drainTimeoutMs?: number }): Promise<void>;
  /** Same as `close()` with the default drain timeout. */
  [Symbol.asyncDispose](): Promise<void>;
}
