/** Errors of the primary's write coordinator, mapped onto the proxy's wire codes. */
import { isWriteCoordinatorError } from '@x/writecoordinator';
import { type Applied, type DbProxyError, type WireErrorCode, wireError } from '../errors.js';

/** What a failed job's error says about its effects (a job that committed the transaction itself: 'yes'). */
function appliedOf(e: { details?: Record<string, unknown> }): Applied {
  const a = e.details?.['applied'];
  return a === true ? 'yes' : a === 'unknown' ? 'unknown' : 'no';
}

/** Maps a coordinator error onto the wire codes; `applied` is what the coordinator guarantees. */
export function fromCoordinatorError(e: unknown, method: string): unknown {
  if (!isWriteCoordinatorError(e)) return e;
  const details: Record<string, unknown> = { method, coordinatorCode: e.code };
  const sqliteCode = e.details?.['sqliteCode'];
  if (typeof sqliteCode === 'string') details['sqliteCode'] = sqliteCode;
  const make = (code: WireErrorCode, retryable?: boolean, applied: Applied = 'no'): DbProxyError =>
    wireError(code, e.message, {
      ...(retryable === undefined ? {} : { retryable }),
      applied,
      details,
      cause: e,
    });
  switch (e.code) {
    case 'WRITECOORDINATOR_METHOD_NOT_FOUND':
      return make('METHOD_NOT_FOUND');
    case 'WRITECOORDINATOR_INVALID_PARAMS':
      if (e.details?.['issues'] !== undefined) details['issues'] = e.details['issues'];
      return make('INVALID_PARAMS');
    case 'WRITECOORDINATOR_EXPIRED':
      return make('EXPIRED');
    case 'WRITECOORDINATOR_FENCED':
      // this process was replaced as primary; the caller retries on the new one
      return make('WRONG_PRIMARY', true);
    case 'WRITECOORDINATOR_CLOSED':
    case 'WRITECOORDINATOR_SHUTTING_DOWN':
      return make('SHUTTING_DOWN');
    case 'WRITECOORDINATOR_QUEUE_FULL':
      details['reason'] = 'queue full';
      return make('INTERNAL', true);
    case 'WRITECOORDINATOR_ABORTED':
      return e;
    case 'WRITECOORDINATOR_SQLITE':
      if (typeof sqliteCode === 'string' && sqliteCode.startsWith('SQLITE_CONSTRAINT'))
        return make('CONFLICT');
      return make('INTERNAL', e.retryable, appliedOf(e));
    case 'WRITECOORDINATOR_JOB_FAILED':
      // A job that ended the transaction itself may have committed; say so.
      return make('INTERNAL', false, appliedOf(e));
    default:
      return make('INTERNAL', e.retryable);
  }
}
