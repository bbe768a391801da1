import { CodedError, type CodedErrorOptions, hasCodePrefix } from '@x/core';

/** `retryable`, `details` and `cause`, as for every `@x/core` CodedError. */
export type WriteCoordinatorErrorInit = CodedErrorOptions;

/** Every error code the package produces. Codes are API: never renamed, never reused. */
export type WriteCoordinatorErrorCode =
  | 'WRITECOORDINATOR_INVALID_OPTIONS'
  | 'WRITECOORDINATOR_BAD_DATABASE'
  | 'WRITECOORDINATOR_QUEUE_FULL'
  | 'WRITECOORDINATOR_EXPIRED'
  | 'WRITECOORDINATOR_CLOSED'
  | 'WRITECOORDINATOR_SHUTTING_DOWN'
  | 'WRITECOORDINATOR_ABORTED'
  | 'WRITECOORDINATOR_METHOD_NOT_FOUND'
  | 'WRITECOORDINATOR_METHOD_EXISTS'
  | 'WRITECOORDINATOR_INVALID_PARAMS'
  | 'WRITECOORDINATOR_ASYNC_JOB'
  | 'WRITECOORDINATOR_RESULT_NOT_SERIALISABLE'
  | 'WRITECOORDINATOR_SQLITE'
  | 'WRITECOORDINATOR_JOB_FAILED'
  | 'WRITECOORDINATOR_CHANGES_OVERFLOW'
  | 'WRITECOORDINATOR_FENCED';

/**
 * The one error class of the package. Check errors by `code`, not `instanceof`. code, message,
 * retryable, details and cause come from `@x/core`'s CodedError.
 *
 * @example
 * ```ts
 * import { createWriteCoordinator, WriteCoordinatorError } from '@x/writecoordinator';
 * import Database from 'better-sqlite3';
 *
 * try {
 *   createWriteCoordinator({ database: new Database(':memory:') }); // no WAL in memory
 * } catch (e) {
 *   if (e instanceof WriteCoordinatorError) console.log(e.code); // WRITECOORDINATOR_BAD_DATABASE
 * }
 * ```
 */
export class WriteCoordinatorError extends CodedError<WriteCoordinatorErrorCode> {
  override readonly name = 'WriteCoordinatorError';
}

/**
 * @example
 * ```ts
 * import { createWriteCoordinator, isWriteCoordinatorError } from '@x/writecoordinator';
 * import Database from 'better-sqlite3';
 *
 * const db = new Database('app.db');
 * const wc = createWriteCoordinator({ database: db });
 * await wc.close();
 * const outcome = await wc.submit(() => 1).catch((e: unknown) => e);
 * if (isWriteCoordinatorError(outcome)) console.log(outcome.code, outcome.retryable); // WRITECOORDINATOR_CLOSED false
 * db.close();
 * ```
 */
export function isWriteCoordinatorError(e: unknown): e is WriteCoordinatorError {
  return hasCodePrefix(e, 'WRITECOORDINATOR_');
}

/** The SQLite result code of a better-sqlite3 `SqliteError` (e.g. `SQLITE_CONSTRAINT_UNIQUE`), if any. */
export function sqliteCodeOf(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

/** Busy and locked conditions clear by themselves; everything else would fail the same way again. */
export function isRetryableSqliteCode(code: string): boolean {
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
}

/** Wraps whatever a job or SQLite threw into the package error, keeping it as `cause`. */
export function toJobError(e: unknown, details: Record<string, unknown>): WriteCoordinatorError {
  if (isWriteCoordinatorError(e)) return e;
  const sqliteCode = sqliteCodeOf(e);
  if (sqliteCode !== undefined) {
    return new WriteCoordinatorError('WRITECOORDINATOR_SQLITE', `SQLite error ${sqliteCode}`, {
      retryable: isRetryableSqliteCode(sqliteCode),
      details: { ...details, sqliteCode },
      cause: e,
    });
  }
  const message = e instanceof Error ? e.message : String(e);
  return new WriteCoordinatorError('WRITECOORDINATOR_JOB_FAILED', `write job failed: ${message}`, {
    details,
    cause: e,
  });
}
