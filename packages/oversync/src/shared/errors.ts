/**
 * The one error class of @x/oversync. Server and client errors both extend it; check errors by
 * `code` (always `OVERSYNC_`-prefixed), never by `instanceof`.
 */
export interface OversyncErrorInit {
  retryable?: boolean;
  details?: Record<string, unknown>;
  cause?: unknown;
}

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

export function isOversyncError(e: unknown): e is OversyncError {
  return (
    e instanceof Error &&
    typeof (e as { code?: unknown }).code === 'string' &&
    (e as unknown as { code: string }).code.startsWith('OVERSYNC_') &&
    typeof (e as { retryable?: unknown }).retryable === 'boolean'
  );
}
