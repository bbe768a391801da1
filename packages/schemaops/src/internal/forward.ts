import { withPhysicalDdlRequired } from '../context.js';
import { errorCode, errorMessage } from '../errors.js';
import { compensate } from './compensate.js';
import {
  BASE_KEY,
  checkLock,
  type Drive,
  type Failure,
  failureOf,
  foldQuietly,
  markQuietly,
  type Outcome,
  stepFailed,
  userAbort,
} from './drive-context.js';
import { fanOut } from './fanout.js';
import { onTarget } from './target.js';

/**
 * The forward run: base DDL, tenant DDL (fanned out), system metadata, cache; a failure before the
 * cache step hands over to compensation.
 */
export async function forward(d: Drive): Promise<Outcome> {
  const { op } = d;
  let failure: Failure | null = null;

  // 1. base project DDL (one transaction: a failure leaves nothing of it behind).
  if (op.steps.base_project_ddl.state !== 'succeeded') {
    checkLock(d);
    failure = userAbort(d, 'base_project_ddl');
    if (!failure) {
      try {
        await onTarget(d, { kind: 'base' }, 'apply');
      } catch (e) {
        checkLock(d);
        failure = failureOf(d, 'base_project_ddl', null, e);
      }
    }
    // The base failed before any tenant ran; unless its commit landed but was not recorded, nothing is applied.
    if (failure && !d.committed.has(BASE_KEY)) return failed(d, failure);
  }

  // 2. tenant DDL, bounded concurrency, a transaction and a ledger entry per tenant.
  if (!failure) {
    const todo = op.steps.tenant_ddl.filter((t) => t.state !== 'succeeded').map((t) => t.tenant);
    failure = userAbort(d, 'tenant_ddl');
    if (!failure && todo.length > 0) {
      const r = await fanOut(
        todo,
        d.concurrency,
        (tenant) => onTarget(d, { kind: 'tenant', tenant }, 'apply'),
        {
          stopOnError: d.deps.failFast,
          signal: d.stop,
        },
      );
      d.folds.push(foldQuietly(d.deps, op.id));
      checkLock(d);
      const first = r.failures[0];
      if (d.user?.aborted) {
        failure = userAbort(d, 'tenant_ddl');
      } else if (first) {
        failure = {
          step: 'tenant_ddl',
          tenant: first.item,
          error: first.error,
          aborted: d.user?.aborted === true,
        };
      } else if (r.notStarted.length > 0) {
        failure = userAbort(d, 'tenant_ddl');
      }
    }
  }

  // 3. system metadata, in a transaction on the ledger cluster that also records the step.
  if (!failure && op.steps.system_schema.state !== 'succeeded') {
    checkLock(d);
    failure = userAbort(d, 'system_schema');
    if (!failure) {
      const t0 = performance.now();
      try {
        await d.deps.cluster.runTx(async (tx) => {
          await d.handler.persistSystem?.({ ...d.ctx, tx });
          await d.deps.ledger.markStep(tx, op.id, 'system_schema', null, 'succeeded', null, true);
        });
        d.deps.telemetry.stepEvent(d.op, 'system_schema', null, 'succeeded', 'apply', t0, null);
      } catch (e) {
        checkLock(d);
        await markQuietly(d.deps, op.id, 'system_schema', null, 'failed', errorMessage(e), true);
        d.deps.telemetry.stepEvent(d.op, 'system_schema', null, 'failed', 'apply', t0, e);
        failure = failureOf(d, 'system_schema', null, e);
      }
    }
  }

  if (failure) return compensate(d, failure);

  // 4. cache: past the point of no return (DDL and metadata are durable); a failure is repaired, not undone.
  if (op.steps.cache.state !== 'succeeded') {
    checkLock(d);
    const t0 = performance.now();
    try {
      // Past the point of no return the user's signal is no longer looked at.
      await d.handler.refreshCache?.({ ...d.ctx, signal: d.lock.signal });
      await d.deps.ledger.markStep(d.deps.cluster, op.id, 'cache', null, 'succeeded', null, true);
      d.deps.telemetry.stepEvent(d.op, 'cache', null, 'succeeded', 'apply', t0, null);
    } catch (e) {
      checkLock(d);
      await markQuietly(d.deps, op.id, 'cache', null, 'failed', errorMessage(e), true);
      d.deps.telemetry.stepEvent(d.op, 'cache', null, 'failed', 'apply', t0, e);
      const error = stepFailed(op, { step: 'cache', tenant: null, error: e, aborted: false }, 'needs_repair');
      await d.deps.ledger.setStatus(op.id, {
        status: 'needs_repair',
        direction: 'forward',
        lastError: error.message,
        lastErrorCode: errorCode(e),
        finished: false,
      });
      return { status: 'needs_repair', error };
    }
  }

  // 5. committed, then afterCommit (never fails the operation).
  await d.deps.ledger.setStatus(op.id, {
    status: 'committed',
    direction: 'forward',
    lastError: null,
    lastErrorCode: null,
    compensationError: null,
    finished: true,
  });
  await afterCommit(d);
  return { status: 'committed', error: null };
}

async function failed(d: Drive, failure: Failure): Promise<Outcome> {
  const error = stepFailed(d.op, failure, 'failed');
  await d.deps.ledger.setStatus(d.op.id, {
    status: 'failed',
    direction: 'forward',
    lastError: error.message,
    lastErrorCode: errorCode(failure.error),
    finished: true,
  });
  return { status: 'failed', error: failure.aborted ? failure.error : error };
}

async function afterCommit(d: Drive): Promise<void> {
  const hook = d.handler.afterCommit;
  if (!hook) return;
  const flag = d.op.physicalDdlRequired;
  try {
    await withPhysicalDdlRequired(flag, () =>
      hook.call(d.handler, { ...d.ctx, signal: d.lock.signal, physicalDdlRequired: flag }),
    );
  } catch (e) {
    d.deps.log?.warn({ err: errorMessage(e), operationId: d.op.id }, 'schemaops afterCommit failed');
    d.deps.telemetry.report({
      type: 'afterCommitFailed',
      operationId: d.op.id,
      project: d.op.project,
      error: errorMessage(e),
    });
  }
}
