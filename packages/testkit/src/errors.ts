/** Every error code @x/testkit throws. Codes are API: never renamed, never reused. */
export type TestkitErrorCode =
  | 'TESTKIT_INVALID_OPTIONS'
  | 'TESTKIT_POSTGRES_UNAVAILABLE'
  | 'TESTKIT_POSTGRES_START_FAILED'
  | 'TESTKIT_EXTERNAL_UNSUPPORTED'
  | 'TESTKIT_REPLICAS_UNAVAILABLE'
  | 'TESTKIT_NOT_A_REPLICA'
  | 'TESTKIT_TIMEOUT'
  | 'TESTKIT_ABORTED'
  | 'TESTKIT_CHILD_EXITED';

export interface TestkitErrorOptions {
  details?: Record<string, unknown>;
  cause?: unknown;
  retryable?: boolean;
}

/** The one error class of @x/testkit; check `code`, not `instanceof`. */
export class TestkitError extends Error {
  override readonly name = 'TestkitError';
  readonly code: TestkitErrorCode;
  readonly retryable: boolean;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: TestkitErrorCode, message: string, options: TestkitErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.details = options.details;
  }
}

export function isTestkitError(e: unknown, code?: TestkitErrorCode): e is TestkitError {
  return (
    e instanceof Error &&
    (e as Partial<TestkitError>).name === 'TestkitError' &&
    (code === undefined || (e as TestkitError).code === code)
  );
}
