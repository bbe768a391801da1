/**
 * `@x/writecoordinator`: the single writer of an SQLite database. A bounded FIFO of synchronous write
 * jobs drained by one loop into group-committed `BEGIN IMMEDIATE … COMMIT` transactions, with
 * failing jobs isolated, idempotent request ids, a persisted commit sequence, backpressure,
 * deadlines, change events and metrics.
 */

export { BATCH_CHANNEL, CLOSE_CHANNEL } from './channels.js';
export {
  isWriteCoordinatorError,
  WriteCoordinatorError,
  type WriteCoordinatorErrorCode,
} from './errors.js';
export { META_TABLE, REQUESTS_TABLE } from './internal/store.js';
export {
  DEFAULT_BUSY_TIMEOUT_MS,
  DEFAULT_CHANGES_BUFFER_SIZE,
  DEFAULT_CHECKPOINT_INTERVAL_MS,
  DEFAULT_CHECKPOINT_WRITER_FALLBACK_PAGES,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_DURABILITY,
  DEFAULT_IDEMPOTENCY_MAX_AGE_MS,
  DEFAULT_IDEMPOTENCY_MAX_ENTRIES,
  DEFAULT_IDEMPOTENCY_PRUNE_INTERVAL_MS,
  DEFAULT_LATENCY_RESERVOIR_SIZE,
  DEFAULT_MAX_BATCH_DELAY_MS,
  DEFAULT_MAX_BATCH_SIZE,
  DEFAULT_MAX_WAITING,
  DEFAULT_QUEUE_SIZE,
  type Logger,
  MAX_REQUEST_ID_LENGTH,
  type ResolvedWriteCoordinatorOptions,
  type WriteCoordinatorOptions,
  writeCoordinatorOptionsSchema,
} from './options.js';
export type { SqliteDatabase, SqliteRunResult, SqliteStatement } from './sqlite.js';
export type {
  CommitEvent,
  Durability,
  JobFn,
  NamedJob,
  SubmitOptions,
  WriteCoordinator,
  WriteCoordinatorMetrics,
  WriteResult,
} from './types.js';

import { Coordinator } from './internal/coordinator.js';
import { resolveOptions, type WriteCoordinatorOptions } from './options.js';
import type { WriteCoordinator } from './types.js';

/**
 * Creates the coordinator over an open, read-write better-sqlite3 database. Sets and checks WAL,
 * `synchronous`, `foreign_keys = ON` and the busy timeout, and creates the package's three tables.
 * Throws WRITECOORDINATOR_INVALID_OPTIONS or WRITECOORDINATOR_BAD_DATABASE.
 *
 * @example
 * ```ts
 * import { createWriteCoordinator } from '@x/writecoordinator';
 * import Database from 'better-sqlite3';
 *
 * const db = new Database('app.db');
 * db.pragma('journal_mode = WAL');
 * db.exec('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)');
 * const wc = createWriteCoordinator({ database: db });
 * const { seq } = await wc.submit((d) => d.prepare('INSERT OR REPLACE INTO kv VALUES (?, ?)').run('a', '1'));
 * console.log('committed at seq', seq);
 * await wc.close();
 * db.close();
 * ```
 */
export function createWriteCoordinator(options: WriteCoordinatorOptions): WriteCoordinator {
  return new Coordinator(resolveOptions(options));
}
