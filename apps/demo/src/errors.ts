/** Stable error codes of the demo app (the CLI prints `CODE: message` on one line and exits non-zero). */
export type DemoErrorCode =
  // usage errors (exit 2): the command line is wrong
  | 'DEMO_UNKNOWN_COMMAND'
  | 'DEMO_UNKNOWN_FLAG'
  | 'DEMO_MISSING_VALUE'
  | 'DEMO_MISSING_FLAG'
  | 'DEMO_BAD_FLAG_VALUE'
  | 'DEMO_BAD_URL'
  | 'DEMO_CONFLICTING_FLAGS'
  | 'DEMO_UNEXPECTED_ARGUMENT'
  // failures (exit 1): something the command needs did not work
  | 'DEMO_INVALID_OPTIONS'
  | 'DEMO_PORT_IN_USE'
  | 'DEMO_LISTEN_FAILED'
  | 'DEMO_DATABASE_UNREACHABLE'
  | 'DEMO_REPLICA_UNREACHABLE'
  | 'DEMO_POSTGRES_START_FAILED'
  | 'DEMO_DATA_DIR_UNUSABLE'
  | 'DEMO_BOOTSTRAP_FAILED'
  | 'DEMO_SERVER_UNREACHABLE'
  | 'DEMO_NO_DEVICE_STATUS'
  | 'DEMO_DEVICE_OWNED_BY_OTHER_USER'
  | 'DEMO_UNKNOWN_TENANT'
  | 'DEMO_UNAUTHORIZED'
  | 'DEMO_DEVICE_FAILED'
  | 'DEMO_VERIFICATION_FAILED'
  | 'DEMO_TIMEOUT'
  | 'DEMO_UNEXPECTED';

/** Codes that mean "the command line is wrong": the CLI exits 2 for them, 1 for every other code. */
export const USAGE_ERROR_CODES: ReadonlySet<DemoErrorCode> = new Set<DemoErrorCode>([
  'DEMO_UNKNOWN_COMMAND',
  'DEMO_UNKNOWN_FLAG',
  'DEMO_MISSING_VALUE',
  'DEMO_MISSING_FLAG',
  'DEMO_BAD_FLAG_VALUE',
  'DEMO_BAD_URL',
  'DEMO_CONFLICTING_FLAGS',
  'DEMO_UNEXPECTED_ARGUMENT',
]);

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

  /** The CLI's exit code for this error: 2 for usage errors, 1 otherwise. */
  get exitCode(): number {
    return USAGE_ERROR_CODES.has(this.code) ? 2 : 1;
  }
}

export function isDemoError(e: unknown): e is DemoError {
  return e instanceof DemoError;
}

/** One line for people: the deepest cause's message (e.g. `connect ECONNREFUSED 127.0.0.1:5`), without a stack. */
export function causeLine(e: unknown): string {
  let cur: unknown = e;
  const seen = new Set<unknown>();
  let text = '';
  while (cur !== undefined && cur !== null && !seen.has(cur)) {
    seen.add(cur);
    const msg =
      cur instanceof Error ? cur.message || (cur as { code?: string }).code || cur.name : String(cur);
    if (msg) text = msg;
    // AggregateError (e.g. a refused connection to every address of `localhost`): its first error says it.
    const inner: unknown =
      cur instanceof AggregateError && cur.errors.length > 0
        ? cur.errors[0]
        : (cur as { cause?: unknown }).cause;
    cur = inner;
  }
  return text.split('\n')[0] ?? '';
}
