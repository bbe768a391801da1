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
 * rolled back: sorts the batch. If the stored sequence is still below `seq`, nothing was committed:
 * the job at fault is rejected (not applied) and every other live job runs again, isolated. Else a
 * job's COMMIT made a prefix of the batch durable. When the job that did it is known (it left no
 * transaction open, or an isolated run checked it on its own), those before it are committed
 * (unless their request record says otherwise), it is rejected as applied, those after run again. After an optimistic run, request records tell: a job whose record is
 * stored at `seq` was committed, as was every job before it; the first job without one was not
 * (nor anything after it). The job that committed is the one job between those two bounds; when
 * anonymous jobs (no requestId) leave more than one candidate, each candidate is rejected with
 * `applied: 'unknown'`. No committed job is ever run again or reported as not applied.
 */
export function recover(
  st: Statements,
  jobs: Job[],
  seq: number,
  outcome: Exclude<Outcome, { kind: 'ok' }>,
  exact: boolean,
  failJob: (j: Job, e: unknown) => void,
): { committed: Job[]; rerun: Job[]; seqCommitted: boolean } {
  const seqCommitted = readSeq(st) >= seq;
  const at = outcome.kind === 'tampered' ? -1 : outcome.index;
  const atError = outcome.kind === 'tampered' ? undefined : outcome.error;
  const committed: Job[] = [];
  const rerun: Job[] = [];
  const live = (i: number): boolean => jobs[i]!.state === JobState.Running;
  if (!seqCommitted || exact) {
    for (let i = 0; i < jobs.length; i++) {
      if (!live(i)) continue;
      const j = jobs[i]!;
      if (i === at) {
        failJob(j, outcome.kind === 'failed' ? atError : endedError(j, seqCommitted, atError));
      } else if (seqCommitted && i < at && recorded(st, j, seq)) committed.push(j);
      else rerun.push(j);
    }
    return { committed, rerun, seqCommitted };
  }
  // Optimistic run, partly committed by some job: find the bounds from the request records.
  const ran = at >= 0 ? at : jobs.length;
  let lastKnown = -1;
  let firstNot = ran;
  for (let i = 0; i < ran && firstNot === ran; i++) {
    if (!live(i)) continue;
    const j = jobs[i]!;
    if (j.replayed) continue; // wrote nothing: committed whatever happened
    if (j.requestId === null) continue;
    const row = st.findRequest.get(j.requestId) as StoredRequest | undefined;
    if (row !== undefined && Number(row.seq) === seq) lastKnown = i;
    else firstNot = i;
  }
  const suspects: number[] = [];
  for (let i = lastKnown + 1; i < firstNot; i++) {
    if (live(i) && !jobs[i]!.replayed) suspects.push(i);
  }
  if (firstNot < ran) suspects.push(firstNot);
  else if (at >= 0) suspects.push(at);
  for (let i = 0; i < jobs.length; i++) {
    if (!live(i)) continue;
    const j = jobs[i]!;
    if (suspects.includes(i)) {
      if (suspects.length === 1) {
        // the job that committed: its work up to its COMMIT is durable
        failJob(
          j,
          i === at && outcome.kind === 'failed'
            ? toJobError(atError, { method: j.method, transactionEnded: 'committed', applied: true })
            : endedError(j, true, i === at ? atError : undefined),
        );
      } else {
        failJob(
          j,
          new WriteCoordinatorError(
            'WRITECOORDINATOR_JOB_FAILED',
            'a job of the batch committed the transaction itself; whether this job was committed is unknown',
            { details: { method: j.method, applied: 'unknown' } },
          ),
        );
      }
    } else if (i === at) {
      // failed or ended after the commit, in the transaction the offender began: rolled back
      failJob(j, outcome.kind === 'failed' ? atError : endedError(j, false, atError));
    } else if (i < (suspects[0] ?? firstNot) || j.replayed) committed.push(j);
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
