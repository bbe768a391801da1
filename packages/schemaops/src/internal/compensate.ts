import { errorCode, errorMessage, SchemaOpsError } from '../errors.js';
import {
  BASE_KEY,
  checkLock,
  type Drive,
  type Failure,
  foldQuietly,
  type Outcome,
  stepFailed,
} from './drive-context.js';
import { fanOut } from './fanout.js';
import { onTarget } from './target.js';

/**
 * Undoes what is applied: the base, then every tenant that succeeded (or committed in this drive but
 * could not be recorded). Runs to the end whatever the user's signal says, so the final status is true:
 * `compensated`, or `needs_repair` when anything could not be undone.
 */
export async function compensate(d: Drive, failure: Failure | null): Promise<Outcome> {
  const id = d.op.id;
  const forwardError = failure ? stepFailed(d.op, failure, 'compensating') : null;
  await d.deps.ledger.setStatus(id, {
    status: 'compensating',
    direction: 'backward',
    ...(forwardError ? { lastError: forwardError.message, lastErrorCode: errorCode(failure?.error) } : {}),
    finished: false,
  });
  // Re-read: the forward run changed tenant states.
  const op = await d.deps.load(id);
  const problems: string[] = [];
  const canUndo = d.handler.compensate !== undefined || d.handler.compensateSql !== undefined;

  const base = op.steps.base_project_ddl;
  if (base.state === 'succeeded' || d.committed.has(BASE_KEY)) {
    if (op.skipBaseDdl) {
      await d.deps.ledger.markStep(d.deps.cluster, id, 'base_project_ddl', null, 'compensated', null, false);
    } else if (!canUndo) {
      problems.push('base_project_ddl: no compensate callback');
    } else {
      try {
        await onTarget(d, { kind: 'base' }, 'compensate');
      } catch (e) {
        checkLock(d);
        problems.push(`base_project_ddl: ${errorMessage(e)}`);
      }
    }
  }

  const undo = op.steps.tenant_ddl
    .filter((t) => t.state === 'succeeded' || d.committed.has(t.tenant))
    .map((t) => t.tenant);
  if (undo.length > 0) {
    if (!canUndo) {
      problems.push(`tenant_ddl: no compensate callback for ${undo.length} tenant(s)`);
    } else {
      const r = await fanOut(
        undo,
        d.concurrency,
        (tenant) => onTarget(d, { kind: 'tenant', tenant }, 'compensate'),
        {
          stopOnError: false,
          signal: d.lock.signal,
        },
      );
      d.folds.push(foldQuietly(d.deps, id));
      checkLock(d);
      for (const f of r.failures) problems.push(`tenant ${f.item}: ${errorMessage(f.error)}`);
    }
  }

  if (problems.length === 0) {
    await d.deps.ledger.setStatus(id, {
      status: 'compensated',
      direction: 'backward',
      compensationError: null,
      finished: true,
    });
    if (!failure) return { status: 'compensated', error: null };
    return {
      status: 'compensated',
      error: failure.aborted ? failure.error : stepFailed(op, failure, 'compensated'),
    };
  }
  const compensationError =
    problems.slice(0, 20).join('; ') + (problems.length > 20 ? `; … ${problems.length - 20} more` : '');
  await d.deps.ledger.setStatus(id, {
    status: 'needs_repair',
    direction: 'backward',
    compensationError,
    finished: false,
  });
  return {
    status: 'needs_repair',
    error: new SchemaOpsError(
      'SCHEMAOPS_COMPENSATION_FAILED',
      `operation ${id}: compensation failed (${problems.length} target(s)); it needs repair`,
      {
        cause: failure?.error,
        details: {
          operationId: id,
          project: op.project,
          status: 'needs_repair',
          step: failure?.step ?? null,
          tenant: failure?.tenant ?? null,
          problems: problems.slice(0, 20),
        },
      },
    ),
  };
}
