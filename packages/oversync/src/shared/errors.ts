/** What an {@link OversyncError} carries besides its code and message. */
export interface OversyncErrorInit {
  retryable?: boolean;
  details?: Record<string, unknown>;
  cause?: unknown;
}

/**
 * The one error class of `@x/oversync`. Server and client errors both extend it; check errors by
 * `code` (always `OVERSYNC_`-prefixed), never by `instanceof`.
 *
 * @example
 * ```ts
 * import { OversyncError } from '@x/oversync';
 *
 * const e = new OversyncError('OVERSYNC_EXAMPLE', 'something went wrong', { retryable: true });
 * console.log(e.code, e.retryable); // OVERSYNC_EXAMPLE true
 * ```
 */
export class OversyncError<C extends `OVERSYNC_${string}` = `OVERSYNC_${string}`> extends Error {
  override name = 'OversyncError';
  readonly code: C;
  readonly retryable: boolean;
  readonly details?: Record<string, unknown>;

  constructor(code: C, message: string, init: OversyncErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.retryable = init.retryable ?? false;
    if (init.details !== undefined) this.details = init.details;
  }
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
  return (
    e instanceof Error &&
    typeof (e as { code?: unknown }).code === 'string' &&
    (e as unknown as { code: string }).code.startsWith('OVERSYNC_') &&
    typeof (e as { retryable?: unknown }).retryable === 'boolean'
  );
}
