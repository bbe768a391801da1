/** What every coded error may carry besides its code and message. */
export interface CodedErrorOptions {
  /** Whether the same call may succeed if tried again. Default false. */
  retryable?: boolean;
  /** Structured, parameter-free facts about the failure (the property is absent when not given). */
  details?: Record<string, unknown>;
  /** The error behind this one (a driver error, say), kept as the standard `cause`. */
  cause?: unknown;
}

/**
 * The base of every package's one error class: a stable string `code` from the package's closed set,
 * `retryable`, optional `details` and the standard `cause`. A package writes
 *
 * ```ts
 * export class DbxError extends CodedError<DbxErrorCode> {
 *   override readonly name = 'DbxError';
 * }
 * ```
 *
 * and keeps its own class name, `name` and guard. Callers check `code`, never `instanceof` (two
 * copies of a package may be loaded), though `instanceof` works as usual within one copy.
 *
 * @example
 * ```ts
 * import { CodedError } from '@x/core';
 *
 * type BillingErrorCode = 'BILLING_CARD_DECLINED' | 'BILLING_INVALID_OPTIONS';
 *
 * class BillingError extends CodedError<BillingErrorCode> {
 *   override readonly name = 'BillingError';
 * }
 *
 * const e = new BillingError('BILLING_CARD_DECLINED', 'card declined', { retryable: true, details: { attempt: 1 } });
 * console.log(e.code, e.retryable, e instanceof CodedError); // BILLING_CARD_DECLINED true true
 * console.log(JSON.stringify(e)); // {"name":"BillingError","code":"BILLING_CARD_DECLINED","retryable":true,"details":{"attempt":1}}
 * ```
 */
export class CodedError<Code extends string = string> extends Error {
  override readonly name: string = 'CodedError';
  readonly code: Code;
  readonly retryable: boolean;
  /** Absent (not merely undefined) when the error was made without details. */
  declare readonly details?: Record<string, unknown>;

  constructor(code: Code, message: string, options: CodedErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    if (options.details !== undefined) {
      (this as { details?: Record<string, unknown> }).details = options.details;
    }
  }

  /**
   * The JSON form: `name`, `code`, `retryable`, then any further own field a subclass adds (dbproxy's
   * `applied`, say), then `details` when present. `message`, `stack` and `cause` are not part of it,
   * as they are not for a plain `Error`; a wire protocol that carries the message builds its own form.
   */
  toJSON(): CodedErrorJSON<Code> {
    const { name, code, retryable, details, ...rest } = { ...this } as unknown as CodedErrorJSON<Code>;
    const out: CodedErrorJSON<Code> = { name, code, retryable, ...rest };
    if (details !== undefined) out.details = details;
    return out;
  }
}

/**
 * Whether `e` is a coded error whose code starts with `prefix`: an `Error` with a string `code`
 * beginning with it and a boolean `retryable`. The guard of a package whose codes share one prefix
 * (`@x/oversync`'s `isOversyncError(e)` is `hasCodePrefix(e, 'OVERSYNC_')`); unlike `instanceof`,
 * it holds across copies of the package.
 *
 * @example
 * ```ts
 * import { CodedError, hasCodePrefix } from '@x/core';
 *
 * const e: unknown = new CodedError('BILLING_CARD_DECLINED', 'card declined', { retryable: true });
 * if (hasCodePrefix(e, 'BILLING_')) console.log(e.code, e.retryable); // BILLING_CARD_DECLINED true
 * console.log(hasCodePrefix(new Error('plain'), 'BILLING_')); // false
 * ```
 */
export function hasCodePrefix<P extends string>(e: unknown, prefix: P): e is CodedError<`${P}${string}`> {
  if (!(e instanceof Error)) return false;
  const { code, retryable } = e as { code?: unknown; retryable?: unknown };
  return typeof code === 'string' && code.startsWith(prefix) && typeof retryable === 'boolean';
}

/** `JSON.stringify` of a {@link CodedError}. */
export interface CodedErrorJSON<Code extends string = string> {
  name: string;
  code: Code;
  retryable: boolean;
  details?: Record<string, unknown>;
  [field: string]: unknown;
}
