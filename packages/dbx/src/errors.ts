import { CodedError, type CodedErrorOptions } from '@x/core';

/** `retryable`, `details` and `cause`, as for every @x/core CodedError. */
export type DbxErrorOptions = CodedErrorOptions;

/**
 * The one error class of @x/dbx. Check errors by `code`, never by `instanceof` (two copies of the
 * package may be loaded). The driver error, when there is one, is kept as `cause`; its SQLSTATE is in
 * `details.sqlState`. Messages never contain parameter values.
 */
export type DbxErrorCode =
  | 'DBX_INVALID_OPTIONS'
  | 'DBX_CLUSTER_CLOSED'
  | 'DBX_NO_HEALTHY_NODE'
  | 'DBX_RETRY_EXHAUSTED'
  | 'DBX_QUERY_CANCELLED'
  | 'DBX_QUERY_FAILED'
  | 'DBX_CONNECTION_FAILED'
  | 'DBX_TX_CLOSED'
  | 'DBX_INVALID_TOKEN'
  | 'DBX_NO_ROWS'
  | 'DBX_ROW_INVALID';

export const DBX_ERROR_CODES: readonly DbxErrorCode[] = Object.freeze([
  'DBX_INVALID_OPTIONS',
  'DBX_CLUSTER_CLOSED',
  'DBX_NO_HEALTHY_NODE',
  'DBX_RETRY_EXHAUSTED',
  'DBX_QUERY_CANCELLED',
  'DBX_QUERY_FAILED',
  'DBX_CONNECTION_FAILED',
  'DBX_TX_CLOSED',
  'DBX_INVALID_TOKEN',
  'DBX_NO_ROWS',
  'DBX_ROW_INVALID',
]);

/** code, message, retryable, details and cause come from @x/core's CodedError. */
export class DbxError extends CodedError<DbxErrorCode> {
  override readonly name = 'DbxError';

  /** SQLSTATE of the server error behind this one, if any. */
  get sqlState(): string | undefined {
    return pgErrorCode(this);
  }
}

export function isDbxError(e: unknown): e is DbxError {
  return (
    typeof e === 'object' &&
    e !== null &&
    (e as { name?: unknown }).name === 'DbxError' &&
    typeof (e as { code?: unknown }).code === 'string'
  );
}

/** Walks `e` and its `cause` chain (bounded), yielding each error-like object. */
function* chain(e: unknown): Generator<Record<string, unknown>> {
  let cur: unknown = e;
  for (let i = 0; i < 8 && typeof cur === 'object' && cur !== null; i++) {
    yield cur as Record<string, unknown>;
    cur = (cur as { cause?: unknown }).cause;
  }
}

const SQLSTATE = /^[0-9A-Z]{5}$/;

/** The SQLSTATE (e.g. `23505`) of a server error, found on `e` or anywhere in its `cause` chain. */
export function pgErrorCode(e: unknown): string | undefined {
  for (const err of chain(e)) {
    const details = err.details as { sqlState?: unknown } | undefined;
    if (details && typeof details.sqlState === 'string') return details.sqlState;
    // pg's DatabaseError carries `severity` next to `code`; node's system errors have codes like ECONNRESET.
    if (typeof err.code === 'string' && SQLSTATE.test(err.code) && 'severity' in err) return err.code;
  }
  return undefined;
}

const NODE_CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
]);

/** Messages node-postgres uses when a connection dies or cannot be had. */
const PG_CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'Connection ended',
  'terminating connection',
];

/**
 * True for errors meaning the connection failed or the server is going away / not accepting
 * connections: node socket errors, SQLSTATE class 08, 57P01-57P03, 53300.
 */
export function isConnectionError(e: unknown): boolean {
  for (const err of chain(e)) {
    if (isDbxError(err) && (err.code === 'DBX_CONNECTION_FAILED' || err.code === 'DBX_NO_HEALTHY_NODE')) {
      return true;
    }
    const code = err.code;
    if (typeof code === 'string' && NODE_CONNECTION_CODES.has(code)) return true;
  }
  const state = pgErrorCode(e);
  if (state !== undefined) {
    return (
      state.startsWith('08') ||
      state === '57P01' ||
      state === '57P02' ||
      state === '57P03' ||
      state === '53300'
    );
  }
  for (const err of chain(e)) {
    const msg = err.message;
    if (typeof msg === 'string' && PG_CONNECTION_MESSAGES.some((m) => msg.includes(m))) return true;
  }
  return false;
}

/** Serialization failure (40001) or deadlock (40P01): the whole transaction may be retried. */
export function isSerializationFailure(e: unknown): boolean {
  const state = pgErrorCode(e);
  return state === '40001' || state === '40P01';
}

/**
 * True when retrying could succeed: connection failures, serialization failures and deadlocks,
 * "read-only transaction" (25006: a standby answered, re-route), or a DbxError flagged retryable.
 * Whether a retry is SAFE also depends on whether the statement may have run; dbx decides that itself.
 */
export function isRetryable(e: unknown): boolean {
  for (const err of chain(e)) {
    if (isDbxError(err)) {
      if (err.code === 'DBX_RETRY_EXHAUSTED' || err.code === 'DBX_QUERY_CANCELLED') return false;
      if (err.retryable) return true;
    }
  }
  if (isConnectionError(e)) return true;
  const state = pgErrorCode(e);
  return state === '40001' || state === '40P01' || state === '25006';
}

/** Integrity constraint violations: SQLSTATE class 23 (unique, foreign key, not null, check, exclusion). */
export function isConstraintViolation(e: unknown): boolean {
  const state = pgErrorCode(e);
  return state?.startsWith('23') === true;
}

/** The constraint name of a constraint violation, if the server reported one. */
export function constraintName(e: unknown): string | undefined {
  for (const err of chain(e)) {
    if (typeof err.constraint === 'string') return err.constraint;
  }
  return undefined;
}
