import type { z } from 'zod';
import type { ResolvedWriteCoordinatorOptions } from './options.js';
import type { SqliteDatabase } from './sqlite.js';

export type Durability = 'normal' | 'full';

/** A write job: a synchronous function of the database. It must not return a Promise. */
export type JobFn<T> = (db: SqliteDatabase) => T;

/** A named write, dispatched through the handler registered for `method`. */
export interface NamedJob {
  method: string;
  params: unknown;
}

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

export interface WriteResult<T> {
  value: T;
  /** The commit sequence of the batch the job committed in. */
  seq: number;
  /** True when the result came from the idempotency table and the job did not run. */
  replayed: boolean;
}

export interface CommitEvent {
  seq: number;
  jobs: Array<{ method: string | null; requestId: string | null }>;
}

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
  p99LatencyMs: number;
  /** Last committed sequence. */
  seq: number;
}

export interface WriteCoordinator {
  readonly options: Readonly<ResolvedWriteCoordinatorOptions>;
  /** Last committed sequence. */
  readonly seq: number;
  register<P>(
    method: string,
    paramsSchema: z.ZodType<P>,
    handler: (db: SqliteDatabase, params: P) => unknown,
  ): void;
  submit<T>(job: JobFn<T> | NamedJob, opts?: SubmitOptions): Promise<WriteResult<T>>;
  /** Runs `fn` in its own `BEGIN IMMEDIATE … COMMIT`, alone, in queue order. */
  runExclusive<T>(fn: JobFn<T>, opts?: SubmitOptions): Promise<WriteResult<T>>;
  subscribe(listener: (e: CommitEvent) => void): () => void;
  changes(opts?: { signal?: AbortSignal }): AsyncIterable<CommitEvent>;
  metrics(): WriteCoordinatorMetrics;
  close(opts?: { drainTimeoutMs?: number }): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
