import { OversyncError, type OversyncErrorInit } from '../shared/errors.js';
import type { WireErrorCode } from '../shared/wire.js';

/** Every error code the server side of `@x/oversync` produces. Codes are API: never renamed, never reused. */
export type SyncServerErrorCode =
  | `OVERSYNC_${Uppercase<WireErrorCode>}`
  | 'OVERSYNC_INVALID_OPTIONS'
  | 'OVERSYNC_UNSUPPORTED_SCHEMA'
  | 'OVERSYNC_NOT_BOOTSTRAPPED'
  | 'OVERSYNC_CLOSED'
  | 'OVERSYNC_ABORTED'
  | 'OVERSYNC_BUNDLE_CONTEXT_CONFLICT'
  | 'OVERSYNC_SCOPE_WRITE_INVALID'
  | 'OVERSYNC_SCOPE_WRITE_NO_CAPTURED_CHANGES'
  | 'OVERSYNC_INTERNAL';

/**
 * The one table mapping wire error codes to HTTP statuses (go-oversync v1 handlers). Every code
 * maps to exactly one status whatever the endpoint.
 */
export const WIRE_ERROR_STATUS: Readonly<Record<WireErrorCode, number>> = Object.freeze({
  invalid_request: 400,
  authentication_failed: 401,
  method_not_allowed: 405,
  service_unavailable: 503,
  connect_invalid: 400,
  connect_failed: 500,
  push_session_invalid: 400,
  push_session_create_failed: 500,
  scope_uninitialized: 409,
  scope_initializing: 409,
  initialization_stale: 409,
  initialization_expired: 410,
  history_pruned: 409,
  source_sequence_out_of_order: 409,
  source_sequence_changed: 409,
  source_retired: 409,
  push_chunk_invalid: 400,
  push_chunk_out_of_order: 409,
  push_chunk_failed: 500,
  push_session_forbidden: 403,
  push_session_not_found: 404,
  push_session_expired: 410,
  push_commit_invalid: 400,
  push_conflict: 409,
  push_row_invalid: 400,
  push_session_commit_failed: 500,
  push_session_delete_failed: 500,
  push_failed: 500,
  committed_bundle_chunk_invalid: 400,
  committed_bundle_not_found: 404,
  committed_bundle_rows_failed: 500,
  pull_failed: 500,
  bundle_change_watch_forbidden: 403,
  bundle_change_watch_disabled: 503,
  bundle_change_watch_failed: 500,
  snapshot_session_invalid: 400,
  source_replacement_invalid: 409,
  snapshot_session_create_failed: 500,
  snapshot_chunk_invalid: 400,
  snapshot_session_not_found: 404,
  snapshot_session_forbidden: 403,
  snapshot_session_expired: 410,
  snapshot_chunk_failed: 500,
  snapshot_session_delete_failed: 500,
  status_failed: 500,
  health_failed: 500,
});

export interface SyncServerErrorInit extends OversyncErrorInit {
  /** Extra top-level fields of the JSON error body (`conflict`, `source_id`, `replaced_by_source_id`). */
  body?: Record<string, unknown>;
}

/**
 * A server error. Those with a `wireCode` travel to clients as `{"error": wireCode, "message"}`
 * with the status {@link WIRE_ERROR_STATUS} gives it; the others (closed, aborted, invalid options)
 * stay on the server.
 *
 * @example
 * ```ts
 * import { SyncServerError } from '@x/oversync/server';
 *
 * const conflict = new SyncServerError('OVERSYNC_PUSH_CONFLICT', 'row changed on the server');
 * console.log(conflict.wireCode, conflict.httpStatus, conflict.retryable); // push_conflict 409 false
 * const closed = new SyncServerError('OVERSYNC_CLOSED', 'the sync service is closed');
 * console.log(closed.wireCode, closed.httpStatus); // undefined undefined
 * ```
 */
export class SyncServerError extends OversyncError<SyncServerErrorCode> {
  override name = 'SyncServerError';
  /** The protocol error code, when this error has a wire form. */
  readonly wireCode: WireErrorCode | undefined;
  readonly body: Record<string, unknown> | undefined;

  constructor(code: SyncServerErrorCode, message: string, init: SyncServerErrorInit = {}) {
    super(code, message, init);
    const wire = code.slice('OVERSYNC_'.length).toLowerCase();
    this.wireCode = wire in WIRE_ERROR_STATUS ? (wire as WireErrorCode) : undefined;
    this.body = init.body;
  }

  /** HTTP status of the wire code, or undefined for errors that have no wire form. */
  get httpStatus(): number | undefined {
    return this.wireCode === undefined ? undefined : WIRE_ERROR_STATUS[this.wireCode];
  }
}

/** Shorthand for an error that has a wire form. */
export function wireError(wire: WireErrorCode, message: string, init?: SyncServerErrorInit): SyncServerError {
  return new SyncServerError(`OVERSYNC_${wire.toUpperCase()}` as SyncServerErrorCode, message, init);
}

/**
 * Thrown by `bootstrap()` when a registered table's shape is not supported (fail closed).
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSyncService, UnsupportedSchemaError } from '@x/oversync/server';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });
 * const sync = createSyncService({ db, registeredTables: [{ schema: 'business', table: 'users' }] });
 * try {
 *   await sync.bootstrap();
 * } catch (e) {
 *   if (!(e instanceof UnsupportedSchemaError)) throw e;
 *   console.error('business.users cannot be synced as it is:', e.message); // fix the table, then restart
 *   process.exitCode = 1;
 * }
 * await sync.close();
 * await db.close();
 * ```
 */
export class UnsupportedSchemaError extends SyncServerError {
  override name = 'UnsupportedSchemaError';
  constructor(message: string, init?: SyncServerErrorInit) {
    super('OVERSYNC_UNSUPPORTED_SCHEMA', message, init);
  }
}

/**
 * Whether `e` is a {@link SyncServerError} (of this copy of the package; `isOversyncError` accepts
 * the errors of any copy, client ones included).
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSyncService, isSyncServerError } from '@x/oversync/server';
 *
 * const db = createCluster({ primary: 'postgres://localhost/app' }); // connects on first use
 * try {
 *   createSyncService({ db, registeredTables: [{ schema: 'business', table: 'users', syncKeyColumns: [] }] });
 * } catch (e) {
 *   if (!isSyncServerError(e)) throw e;
 *   console.log(e.code, e.wireCode); // OVERSYNC_INVALID_OPTIONS undefined
 * }
 * await db.close();
 * ```
 */
export function isSyncServerError(e: unknown): e is SyncServerError {
  return e instanceof SyncServerError;
}
