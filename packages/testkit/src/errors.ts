import { CodedError, type CodedErrorOptions } from '@x/core';

/** `retryable`, `details` and `cause`, as for every @x/core CodedError. */
export type TestkitErrorOptions = CodedErrorOptions;

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

/**
 * The one error class of @x/testkit; check `code`, not `instanceof`. code, message, retryable,
 * details and cause come from @x/core's CodedError.
 */
export class TestkitError extends CodedError<TestkitErrorCode> {
  override readonly name = 'TestkitError';
}

export function isTestkitError(e: unknown, code?: TestkitErrorCode): e is TestkitError {
  return (
    e instanceof Error &&
    (e as Partial<TestkitError>).name === 'TestkitError' &&
    (code === undefined || (e as TestkitError).code === code)
  );
}
