/** `runExclusive` on the primary's coordinator: a transaction of its own, in queue order. */
import { isWriteCoordinatorError, type SqliteDatabase } from '@x/writecoordinator';
import { isDbProxyError } from '../errors.js';
import { EXCLUSIVE_METRICS_KEY, type ExclusiveOptions, type WriteResult } from '../types.js';
import { fromCoordinatorError } from './coordinator-errors.js';
import type { MethodStats } from './method-stats.js';
import type { Primary } from './primary.js';

/**
 * A `runExclusive` transaction on the primary's coordinator (BEGIN IMMEDIATE..COMMIT of its own, in
 * queue order). `fn`'s own error comes back as it was thrown, not wrapped in the coordinator's
 * JOB_FAILED; an abort comes back as the signal's reason; other coordinator errors as wire errors.
 */
export async function runExclusiveOn<T>(
  primary: Primary,
  fn: (db: SqliteDatabase) => T,
  opts: ExclusiveOptions,
  deadline: number,
  stats: MethodStats,
): Promise<WriteResult<T>> {
  const { requestId, signal, durability } = opts;
  stats.count++;
  const t0 = performance.now();
  let thrown: { error: unknown } | null = null;
  try {
    const r = await primary.coordinator.runExclusive<T>(
      (db) => {
        try {
          return fn(db);
        } catch (e) {
          thrown = { error: e };
          throw e;
        }
      },
      {
        deadline,
        ...(requestId === undefined ? {} : { requestId }),
        ...(signal === undefined ? {} : { signal }),
        ...(durability === undefined ? {} : { durability }),
      },
    );
    stats.ok++;
    return { value: r.value, seq: r.seq, replayed: r.replayed };
  } catch (e) {
    const own = thrown as { error: unknown } | null;
    let err: unknown;
    if (own !== null && isWriteCoordinatorError(e) && e.cause === own.error) err = own.error;
    else if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_ABORTED')
      err = signal?.aborted ? signal.reason : e;
    else err = fromCoordinatorError(e, EXCLUSIVE_METRICS_KEY);
    stats.fail(isDbProxyError(err) ? err.code : own !== null && err === own.error ? 'THROWN' : 'ABORTED');
    throw err;
  } finally {
    stats.latency.record(performance.now() - t0);
  }
}
