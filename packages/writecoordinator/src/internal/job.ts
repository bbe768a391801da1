import type { SqliteDatabase } from '../sqlite.js';
import type { WriteResult } from '../types.js';

/** Where a job is on its way from submit to settlement. */
export enum JobState {
  Waiting = 0, // waiting for queue space
  Queued = 1,
  Running = 2,
  Done = 3,
}

/** One submitted job: its function, its options, and its outcome once it ran. */
export class Job {
  state: JobState = JobState.Queued;
  value: unknown = undefined;
  seq = 0;
  replayed = false;
  resolve!: (r: WriteResult<unknown>) => void;
  reject!: (e: unknown) => void;
  onAbort: (() => void) | null = null;
  timer: NodeJS.Timeout | null = null;
  /** Submit time for the latency reservoir, or -1 when this job is not sampled. */
  t0 = -1;
  constructor(
    readonly fn: (db: SqliteDatabase) => unknown,
    readonly method: string | null,
    readonly requestId: string | null,
    readonly full: boolean,
    readonly exclusive: boolean,
    readonly deadline: number,
    readonly signal: AbortSignal | null,
  ) {}
}

/** Marks the job done and drops its abort listener and its waiting-room timer. */
export function detach(j: Job): void {
  j.state = JobState.Done;
  if (j.onAbort !== null) {
    j.signal?.removeEventListener('abort', j.onAbort);
    j.onAbort = null;
  }
  if (j.timer !== null) {
    clearTimeout(j.timer);
    j.timer = null;
  }
}

export function settleError(j: Job, e: unknown): void {
  detach(j);
  j.reject(e);
}

// One executor for every job's promise (no closure per submit): it hands the resolving functions
// over through these two slots, which are read right after `new Promise` returns.
let capturedResolve: ((r: WriteResult<unknown>) => void) | null = null;
let capturedReject: ((e: unknown) => void) | null = null;
function capture(resolve: (r: WriteResult<unknown>) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

/** The promise the submitter gets; `j.resolve` and `j.reject` settle it. */
export function promiseOf(j: Job): Promise<WriteResult<unknown>> {
  const promise = new Promise<WriteResult<unknown>>(capture);
  j.resolve = capturedResolve!;
  j.reject = capturedReject!;
  return promise;
}

export function isThenable(v: unknown): boolean {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}
