/** Stable error codes of the demo app (the CLI prints `code: message` and exits non-zero). */
export type DemoErrorCode =
  | 'DEMO_INVALID_OPTIONS'
  | 'DEMO_UNAUTHORIZED'
  | 'DEMO_DEVICE_FAILED'
  | 'DEMO_VERIFICATION_FAILED'
  | 'DEMO_TIMEOUT';

export class DemoError extends Error {
  readonly code: DemoErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;
  constructor(
    code: DemoErrorCode,
    message: string,
    opts: { cause?: unknown; details?: Record<string, unknown>; retryable?: boolean } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DemoError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.details = opts.details;
  }
}

export function isDemoError(e: unknown): e is DemoError {
  return e instanceof DemoError;
}
