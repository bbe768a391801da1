import { CodedError, type CodedErrorOptions, hasCodePrefix } from '@x/core';

/**
 * What an {@link OversyncError} carries besides its code and message: `retryable`, `details` and
 * `cause`, as for every `@x/core` CodedError.
 */
export type OversyncErrorInit = CodedErrorOptions;

/**
 * The one error class of `@x/oversync`. Server and client errors both extend it; check errors by
 * `code` (always `OVERSYNC_`-prefixed), never by `instanceof`. code, message, retryable, details,
 * cause and `toJSON()` come from `@x/core`'s CodedError.
 *
 * @example
 * ```ts
 * import { OversyncError } from '@x/oversync';
 *
 * const e = new OversyncError('OVERSYNC_EXAMPLE', 'something went wrong', { retryable: true });
 * console.log(e.code, e.retryable); // OVERSYNC_EXAMPLE true
 * ```
 */
export class OversyncError<C extends `OVERSYNC_${string}` = `OVERSYNC_${string}`> extends CodedError<C> {
  override name = 'OversyncError';
}

/**
 * Whether `e` is an error of `@x/oversync` (server or client): an `Error` with an `OVERSYNC_` code
 * and a `retryable` flag. Works across copies of the package, unlike `instanceof`.
 *
 * @example
 * ```ts
 * import { isOversyncError } from '@x/oversync';
 * import { createSyncClient } from '@x/oversync/client';
 *
 * try {
 *   createSyncClient({} as never);
 * } catch (e) {
 *   if (isOversyncError(e)) console.log(e.code); // OVERSYNC_CLIENT_INVALID_OPTIONS
 * }
 * ```
 */
export function isOversyncError(e: unknown): e is OversyncError {
  return hasCodePrefix(e, 'OVERSYNC_');
}
