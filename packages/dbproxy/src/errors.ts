import { CodedError, type CodedErrorOptions, hasCodePrefix } from '@x/core';

/**
 * The codes a failed write carries on the wire (`error.data.code`), exactly as the protocol names them.
 * Codes are API: never renamed, never reused.
 */
export type WireErrorCode =
  | 'TIMEOUT'
  | 'UNREACHABLE'
  | 'METHOD_NOT_FOUND'
  | 'INVALID_PARAMS'
  | 'CONFLICT'
  | 'EXPIRED'
  | 'WRONG_PRIMARY'
  | 'SHUTTING_DOWN'
  | 'INTERNAL'
  | 'PARSE_ERROR'
  | 'INVALID_REQUEST';

/**
 * Every {@link WireErrorCode}, frozen: the codes a primary may put in a JSON-RPC error's
 * `data.code`. A secondary rebuilds an error with one of these codes as `DBPROXY_<code>`; an error
 * object with any other code becomes `DBPROXY_INTERNAL`.
 */
export const WIRE_ERROR_CODES: readonly WireErrorCode[] = Object.freeze([
  'TIMEOUT',
  'UNREACHABLE',
  'METHOD_NOT_FOUND',
  'INVALID_PARAMS',
  'CONFLICT',
  'EXPIRED',
  'WRONG_PRIMARY',
  'SHUTTING_DOWN',
  'INTERNAL',
  'PARSE_ERROR',
  'INVALID_REQUEST',
]);

/** Every error code the package produces: the wire codes prefixed, plus local-only ones. */
export type DbProxyErrorCode =
  | `DBPROXY_${WireErrorCode}`
  | 'DBPROXY_INVALID_OPTIONS'
  | 'DBPROXY_CLOSED'
  | 'DBPROXY_NOT_PRIMARY'
  | 'DBPROXY_RUNTIME_DIR'
  | 'DBPROXY_CHANGES_OVERFLOW'
  | 'DBPROXY_INVALID_ARGUMENT'
  | 'DBPROXY_PARAMS_NOT_SERIALISABLE';

/** Whether the write took effect: `'unknown'` only when a request may have reached a primary and no answer came. */
export type Applied = 'no' | 'unknown' | 'yes';

/** `retryable`, `details`, `cause` (as every `@x` coded error), and whether the write took effect. */
export interface DbProxyErrorInit extends CodedErrorOptions {
  applied?: Applied;
}

/**
 * The one error class of the package. Check errors by `code`, not `instanceof`. code, message,
 * retryable, details and cause come from `@x/core`'s CodedError; `applied` is the package's own.
 *
 * @example
 * ```ts
 * import { createDbProxy, DbProxyError } from '@x/dbproxy';
 *
 * const proxy = createDbProxy({ databasePath: './kv.db', writes: {} });
 * try {
 *   await proxy.write('nope', {});
 * } catch (e) {
 *   if (e instanceof DbProxyError) console.log(e.code, e.applied); // DBPROXY_METHOD_NOT_FOUND no
 * }
 * await proxy.close();
 * ```
 */
export class DbProxyError extends CodedError<DbProxyErrorCode> {
  override readonly name = 'DbProxyError';
  readonly applied: Applied;

  constructor(code: DbProxyErrorCode, message: string, init: DbProxyErrorInit = {}) {
    super(code, message, init);
    this.applied = init.applied ?? 'no';
  }

  /** The wire code of this error, or `null` for local-only codes. */
  get wireCode(): WireErrorCode | null {
    const bare = this.code.slice('DBPROXY_'.length);
    return (WIRE_ERROR_CODES as readonly string[]).includes(bare) ? (bare as WireErrorCode) : null;
  }
}

/**
 * @example
 * ```ts
 * import { createDbProxy, isDbProxyError } from '@x/dbproxy';
 *
 * const proxy = createDbProxy({ databasePath: './kv.db', writes: {} });
 * const outcome = await proxy.write('nope', {}).catch((e: unknown) => e);
 * // `applied` says whether a failed write may have taken effect: 'no', 'yes' or 'unknown'
 * if (isDbProxyError(outcome)) console.log(outcome.code, outcome.applied, outcome.retryable); // DBPROXY_METHOD_NOT_FOUND no false
 * await proxy.close();
 * ```
 */
export function isDbProxyError(e: unknown): e is DbProxyError {
  return hasCodePrefix(e, 'DBPROXY_');
}

/** Default retryability per wire code (TIMEOUT and UNREACHABLE are retryable with the same requestId). */
export const RETRYABLE_BY_DEFAULT: Readonly<Record<WireErrorCode, boolean>> = Object.freeze({
  TIMEOUT: true,
  UNREACHABLE: true,
  METHOD_NOT_FOUND: false,
  INVALID_PARAMS: false,
  CONFLICT: false,
  EXPIRED: true,
  WRONG_PRIMARY: true,
  SHUTTING_DOWN: true,
  INTERNAL: false,
  PARSE_ERROR: false,
  INVALID_REQUEST: false,
});

export function wireError(code: WireErrorCode, message: string, init: DbProxyErrorInit = {}): DbProxyError {
  return new DbProxyError(`DBPROXY_${code}`, message, {
    retryable: RETRYABLE_BY_DEFAULT[code],
    ...init,
  });
}
