/**
 * Intake checks and the errors of a job that never ran: a job that is neither a function nor a
 * registered `{ method, params }`, invalid options, a closed coordinator, a full queue, an abort or
 * a deadline before the job ran, a close that dropped it.
 */
import { WriteCoordinatorError } from '../errors.js';
import { MAX_REQUEST_ID_LENGTH } from '../options.js';
import type { SqliteDatabase } from '../sqlite.js';
import type { JobFn, NamedJob, SubmitOptions } from '../types.js';
import type { MethodRegistry } from './method-registry.js';

/** The function the writer runs for `job`, or the error that refuses it. */
export function jobFunctionOf(
  job: JobFn<unknown> | NamedJob,
  exclusive: boolean,
  registry: MethodRegistry,
): ((db: SqliteDatabase) => unknown) | WriteCoordinatorError {
  if (typeof job === 'function') return job;
  if (typeof job === 'object' && job !== null && typeof job.method === 'string' && !exclusive) {
    return registry.bind(job.method, job.params);
  }
  return new WriteCoordinatorError(
    'WRITECOORDINATOR_INVALID_PARAMS',
    exclusive ? 'runExclusive takes a function' : 'a job is a function or { method, params }',
  );
}

/** The error that refuses invalid submit options, or null. */
export function checkSubmitOptions(opts: SubmitOptions): WriteCoordinatorError | null {
  const { deadline, requestId, durability } = opts;
  if (
    (requestId !== undefined &&
      (typeof requestId !== 'string' ||
        requestId.length === 0 ||
        requestId.length > MAX_REQUEST_ID_LENGTH)) ||
    (deadline !== undefined && (typeof deadline !== 'number' || Number.isNaN(deadline))) ||
    (durability !== undefined && durability !== 'normal' && durability !== 'full')
  ) {
    return new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'invalid submit options', {
      details: {
        requestIdLength: typeof requestId === 'string' ? requestId.length : null,
        durability,
        applied: false,
      },
    });
  }
  return null;
}

export function closedError(): WriteCoordinatorError {
  return new WriteCoordinatorError('WRITECOORDINATOR_CLOSED', 'the write coordinator is closed', {
    details: { applied: false },
  });
}

/**
 * QUEUE_FULL is made without a stack trace: under overload it is created for most submits, and
 * capturing a stack costs more than everything else on that path. Its `code` says all there is.
 */
export function queueFullError(queueSize: number, waiting: number, cause?: unknown): WriteCoordinatorError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new WriteCoordinatorError('WRITECOORDINATOR_QUEUE_FULL', 'the write queue is full', {
      retryable: true,
      details: { queueSize, waiting, applied: false },
      cause,
    });
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function shuttingDownError(): WriteCoordinatorError {
  return new WriteCoordinatorError(
    'WRITECOORDINATOR_SHUTTING_DOWN',
    'the write coordinator is shutting down; the job was not applied',
    { retryable: true, details: { applied: false } },
  );
}

export function abortedError(reason: unknown): WriteCoordinatorError {
  return new WriteCoordinatorError(
    'WRITECOORDINATOR_ABORTED',
    'the job was aborted while queued; it did not run',
    {
      details: { applied: false },
      cause: reason,
    },
  );
}

export function expiredError(deadline: number): WriteCoordinatorError {
  return new WriteCoordinatorError('WRITECOORDINATOR_EXPIRED', 'the job reached its deadline before it ran', {
    retryable: true,
    details: { deadline, applied: false },
  });
}
