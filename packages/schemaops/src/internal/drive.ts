import { errorMessage, isSchemaOpsError, SchemaOpsError } from '../errors.js';
import type { Operation, OperationHandler } from '../types.js';
import { compensate } from './compensate.js';
import type { Drive, DriveDeps, Outcome } from './drive-context.js';
import { forward } from './forward.js';
import type { ProjectLock } from './lock.js';

/** Puts an unfinished operation back in motion (new attempt) and drives it from its first unfinished step. */
export async function resume(
  deps: DriveDeps,
  id: string,
  handler: OperationHandler<unknown>,
  lock: ProjectLock,
  signal: AbortSignal | undefined,
  concurrency: number,
): Promise<Outcome> {
  const before = await deps.load(id);
  // Re-read under the lock: `request` comes from the ledger, decoded by the handler's schema.
  const direction =
    before.status === 'compensating'
      ? 'backward'
      : before.status === 'needs_repair'
        ? before.direction
        : 'forward';
  await deps.ledger.setStatus(id, {
    status: direction === 'forward' ? 'applying' : 'compensating',
    direction,
    newAttempt: true,
    finished: false,
    owner: deps.owner,
  });
  const op = await deps.load(id);
  return drive(deps, op, handler, lock, signal, concurrency);
}

/**
 * Runs an operation from its ledger state: forward from the first step that has not succeeded
 * (skipping tenants that already did), or backward (compensation) when it was compensating. The one
 * code path for a new run, a resume after a crash and a repair.
 */
export async function drive(
  deps: DriveDeps,
  op: Operation,
  handler: OperationHandler<unknown>,
  lock: ProjectLock,
  user: AbortSignal | undefined,
  concurrency: number,
): Promise<Outcome> {
  const started = performance.now();
  const stop = user ? AbortSignal.any([user, lock.signal]) : lock.signal;
  const request = deps.decodeRequest(handler, op.type, op.request);
  const d: Drive = {
    deps,
    op,
    handler,
    lock,
    stop,
    user,
    concurrency,
    ctx: Object.freeze({
      operationId: op.id,
      project: op.project,
      type: op.type,
      request,
      attempt: op.attemptCount,
      signal: stop,
    }),
    committed: new Set(),
    folds: [],
  };
  try {
    const outcome = op.direction === 'forward' ? await forward(d) : await compensate(d, null);
    await Promise.all(d.folds);
    deps.telemetry.operationEvent(op, outcome, started);
    return outcome;
  } catch (e) {
    await Promise.all(d.folds);
    if (lock.signal.aborted) throw lock.signal.reason;
    if (isSchemaOpsError(e)) throw e;
    // A ledger write failed: the row is left as it was (applying / compensating) for a reconcile.
    throw new SchemaOpsError(
      'SCHEMAOPS_LEDGER_FAILED',
      `the ledger could not be updated: ${errorMessage(e)}`,
      {
        retryable: true,
        cause: e,
        details: { operationId: op.id, project: op.project },
      },
    );
  }
}
