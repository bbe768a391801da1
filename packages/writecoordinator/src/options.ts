import { isLogger, type Logger, parseOptions, SILENT_LOGGER } from '@x/core';
import { z } from 'zod';
import { WriteCoordinatorError } from './errors.js';
import type { SqliteDatabase } from './sqlite.js';

/** Default `queueSize`: jobs that may wait for the writer loop (256). */
export const DEFAULT_QUEUE_SIZE = 256;
/** Default `maxBatchSize`: most jobs committed in one transaction (256). */
export const DEFAULT_MAX_BATCH_SIZE = 256;
/** Default `maxBatchDelayMs` (0 ms): a batch runs on the next event-loop turn, waiting for no more jobs. */
export const DEFAULT_MAX_BATCH_DELAY_MS = 0;
/** Default `durability`: batches commit under `synchronous = NORMAL` unless a job asks for `'full'`. */
export const DEFAULT_DURABILITY = 'normal' as const;
/** Default `busyTimeoutMs`: SQLite's `busy_timeout` set on the connection (5,000 ms). */
export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;
/** Default `maxWaiting`: submitters that may wait for queue space once the queue is full (1,024). */
export const DEFAULT_MAX_WAITING = 1_024;
/** Default `drainTimeoutMs`: how long `close()` lets queued jobs run before rejecting the rest (5,000 ms). */
export const DEFAULT_DRAIN_TIMEOUT_MS = 5_000;
/** Default `idempotency.maxAgeMs`: recorded request ids older than this are pruned (24 hours, in ms). */
export const DEFAULT_IDEMPOTENCY_MAX_AGE_MS = 24 * 60 * 60 * 1_000;
/** Default `idempotency.maxEntries`: recorded request ids kept at most, the newest (100,000). */
export const DEFAULT_IDEMPOTENCY_MAX_ENTRIES = 100_000;
/**
 * Default `idempotency.pruneIntervalMs` (60,000 ms): after a commit, records are pruned once this
 * long has passed since the last prune (or `maxEntries / 4` new records were written).
 */
export const DEFAULT_IDEMPOTENCY_PRUNE_INTERVAL_MS = 60_000;
/** Default `changesBufferSize`: events a `changes()` iterator buffers before CHANGES_OVERFLOW (1,024). */
export const DEFAULT_CHANGES_BUFFER_SIZE = 1_024;
/** Default `latencyReservoirSize`: latest sampled job latencies kept for p50/p99 (4,096). */
export const DEFAULT_LATENCY_RESERVOIR_SIZE = 4_096;
/** Default `checkpoint.intervalMs`: time between the background thread's passive WAL checkpoints (10 ms). */
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 10;
/**
 * Default `checkpoint.writerFallbackPages` (10,000 pages): the writer's `wal_autocheckpoint` while the
 * background checkpoint thread runs, so it still checkpoints itself if that thread falls behind.
 */
export const DEFAULT_CHECKPOINT_WRITER_FALLBACK_PAGES = 10_000;
/** The longest `requestId` a submit accepts (characters). */
export const MAX_REQUEST_ID_LENGTH = 512;

/** The logger contract and the silent default are `@x/core`'s, shared by every package. */
export { type Logger, SILENT_LOGGER };

const isDatabase = (v: unknown): v is SqliteDatabase =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as SqliteDatabase).prepare === 'function' &&
  typeof (v as SqliteDatabase).exec === 'function' &&
  typeof (v as SqliteDatabase).pragma === 'function' &&
  typeof (v as SqliteDatabase).transaction === 'function';

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();
/** The `@x/core` logger contract (pino or a look-alike); silent by default. */
const loggerOption = z
  .custom<Logger>(isLogger, { message: 'expected a pino-compatible logger' })
  .default(SILENT_LOGGER);

/**
 * The zod schema of {@link WriteCoordinatorOptions}, holding every default (the `DEFAULT_*`
 * constants). Strict: an unknown key is refused. `createWriteCoordinator` parses its options with
 * it and throws WRITECOORDINATOR_INVALID_OPTIONS with the issues when they do not pass.
 */
export const writeCoordinatorOptionsSchema = z
  .object({
    /** A better-sqlite3 database opened read-write. The coordinator never closes it. */
    database: z.custom<SqliteDatabase>(isDatabase, { message: 'expected a better-sqlite3 Database' }),
    /** Jobs that may wait for the writer loop. */
    queueSize: positiveInt.default(DEFAULT_QUEUE_SIZE),
    /** Most jobs committed in one transaction. */
    maxBatchSize: positiveInt.default(DEFAULT_MAX_BATCH_SIZE),
    /** How long the loop waits for more jobs after the first one arrives (0: next turn of the event loop). */
    maxBatchDelayMs: nonNegativeInt.default(DEFAULT_MAX_BATCH_DELAY_MS),
    /** `synchronous` pragma for ordinary batches: NORMAL or FULL. */
    durability: z.enum(['normal', 'full']).default(DEFAULT_DURABILITY),
    /** SQLite `busy_timeout` for the connection. */
    busyTimeoutMs: nonNegativeInt.default(DEFAULT_BUSY_TIMEOUT_MS),
    /** Submitters that may wait for queue space when the queue is full; beyond, QUEUE_FULL at once. */
    maxWaiting: nonNegativeInt.default(DEFAULT_MAX_WAITING),
    /** Default for `close({ drainTimeoutMs })`. */
    drainTimeoutMs: nonNegativeInt.default(DEFAULT_DRAIN_TIMEOUT_MS),
    idempotency: z
      .object({
        maxAgeMs: positiveInt.default(DEFAULT_IDEMPOTENCY_MAX_AGE_MS),
        maxEntries: positiveInt.default(DEFAULT_IDEMPOTENCY_MAX_ENTRIES),
        pruneIntervalMs: positiveInt.default(DEFAULT_IDEMPOTENCY_PRUNE_INTERVAL_MS),
      })
      .strict()
      .prefault({}),
    /**
     * WAL checkpoints in a background thread (see README): `intervalMs` between passive checkpoints
     * (0: none; SQLite checkpoints inside the writer's COMMIT as usual), `writerFallbackPages` the
     * writer's raised `wal_autocheckpoint` while the background thread runs.
     */
    checkpoint: z
      .object({
        intervalMs: nonNegativeInt.default(DEFAULT_CHECKPOINT_INTERVAL_MS),
        writerFallbackPages: positiveInt.default(DEFAULT_CHECKPOINT_WRITER_FALLBACK_PAGES),
      })
      .strict()
      .prefault({}),
    /** Events buffered per `changes()` iterator before it fails with CHANGES_OVERFLOW. */
    changesBufferSize: positiveInt.default(DEFAULT_CHANGES_BUFFER_SIZE),
    /**
     * Fencing: the epoch of this writer (e.g. an election's term). The coordinator stores it in the
     * file at creation (refusing with FENCED if a higher one is stored) and checks it inside every
     * batch transaction: once a writer of a higher epoch has claimed the file, every batch of this
     * one fails with FENCED before any job runs, and the coordinator refuses all further work.
     * Unset: no fencing check.
     */
    fencingEpoch: positiveInt.optional(),
    /** Latest job latencies kept for p50/p99. */
    latencyReservoirSize: positiveInt.default(DEFAULT_LATENCY_RESERVOIR_SIZE),
    logger: loggerOption,
  })
  .strict();

/** What `createWriteCoordinator` takes: only `database` is required. */
export type WriteCoordinatorOptions = z.input<typeof writeCoordinatorOptionsSchema>;
/** The validated, defaulted, frozen options readable back as `coordinator.options`. */
export type ResolvedWriteCoordinatorOptions = z.output<typeof writeCoordinatorOptionsSchema>;

/**
 * The options `createWriteCoordinator` runs with: checked by the schema (defaults filled in), then
 * frozen by `@x/core`'s `parseOptions`, which leaves the caller's database and logger as they were.
 */
export function resolveOptions(input: unknown): Readonly<ResolvedWriteCoordinatorOptions> {
  return parseOptions(
    writeCoordinatorOptionsSchema,
    input,
    (error) =>
      new WriteCoordinatorError('WRITECOORDINATOR_INVALID_OPTIONS', 'invalid write coordinator options', {
        details: { issues: error.issues },
        cause: error,
      }),
  );
}
