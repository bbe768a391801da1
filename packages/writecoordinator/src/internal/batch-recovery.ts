import { sqliteCodeOf, toJobError, WriteCoordinatorError } from '../errors.js';
import { type Job, JobState } from './job.js';
import { readSeq, type Statements, type StoredRequest } from './store.js';

/** How a run of the batch's jobs went (see `BatchRunner`). */
export type Outcome =
  | { kind: 'ok' }
  | { kind: 'failed'; index: number; error: unknown }
  | { kind: 'ended'; index: number; error: unknown }
  | { kind: 'tampered' };

/** The outcome of a batch run where no job ended the transaction (shared: no allocation per batch). */
export const OK: { kind: 'ok' } = Object.freeze({ kind: 'ok' });
export const TAMPERED: { kind: 'tampered' } = Object.freeze({ kind: 'tampered' });

/**
 * After a failed job or one that ended (or tampered with) the transaction, once what was open is
 * rolled back: sorts the batch. The job at fault (none for a tampered run) is rejected, every other
 * live job runs again, isolated.
 *
 * The commit guard (store.ts) makes a COMMIT by a job impossible, so normally nothing of the batch
 * was committed. The one exception is a job that deleted the guard row itself and then committed:
 * the check right after it sees it, so it is known exactly; the jobs before it were committed by
 * that COMMIT (unless their request record says otherwise), it is rejected as applied, and the jobs
 * after it run again. No committed job is ever run again or reported as not applied.
 */
export function recover(
  st: Statements,
  jobs: Job[],
  seq: number,
  outcome: Exclude<Outcome, { kind: 'ok' }>,
  failJob: (j: Job, e: unknown) => void,
): { committed: Job[]; rerun: Job[]; seqCommitted: boolean } {
  const seqCommitted = readSeq(st) >= seq;
  const at = outcome.kind === 'tampered' ? -1 : outcome.index;
  const atError = outcome.kind === 'tampered' ? undefined : outcome.error;
  const committed: Job[] = [];
  const rerun: Job[] = [];
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i]!;
    if (j.state !== JobState.Running) continue;
    if (i === at) {
      failJob(j, outcome.kind === 'failed' ? atError : endedError(j, seqCommitted, atError));
    } else if (seqCommitted && i < at && recorded(st, j, seq)) committed.push(j);
    else rerun.push(j);
  }
  return { committed, rerun, seqCommitted };
}

/** Whether a job that ran before a job's COMMIT was committed by it: its record says so, if it has one. */
function recorded(st: Statements, j: Job, seq: number): boolean {
  if (j.replayed || j.requestId === null) return true;
  const row = st.findRequest.get(j.requestId) as StoredRequest | undefined;
  return row !== undefined && Number(row.seq) === seq;
}

function endedError(j: Job, committed: boolean, error: unknown): WriteCoordinatorError {
  const details = {
    method: j.method,
    transactionEnded: committed ? 'committed' : 'rolled back',
    applied: committed,
  };
  // e.g. SQLITE_FULL, which rolls the transaction back
  if (sqliteCodeOf(error) !== undefined) return toJobError(error, details);
  return new WriteCoordinatorError(
    'WRITECOORDINATOR_JOB_FAILED',
    committed
      ? 'the job committed the batch transaction'
      : 'the job ended the batch transaction or released its savepoint',
    { details, cause: error },
  );
}
