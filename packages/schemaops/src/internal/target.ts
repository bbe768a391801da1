import { errorMessage, SchemaOpsError } from '../errors.js';
import type { DdlTarget, StepName, StepState } from '../types.js';
import { BASE_KEY, type Drive, markQuietly } from './drive-context.js';
import { findTransactionControl } from './sql.js';

/**
 * Applies or compensates one target in a transaction of its own and records its step. When the
 * target lives on the ledger's cluster the record is written in that same transaction.
 */
export async function onTarget(d: Drive, target: DdlTarget, phase: 'apply' | 'compensate'): Promise<void> {
  const { op, handler } = d;
  const step: StepName = target.kind === 'base' ? 'base_project_ddl' : 'tenant_ddl';
  const tenant = target.kind === 'tenant' ? target.tenant : null;
  const key = tenant ?? BASE_KEY;
  const okState: StepState = phase === 'apply' ? 'succeeded' : 'compensated';
  const callback = phase === 'apply' ? handler.applyDdl : handler.compensate;
  const sqlOf = phase === 'apply' ? handler.applySql : handler.compensateSql;
  // The forward run stops on the user's signal; compensation only on losing the lock.
  const signal = phase === 'apply' ? d.stop : d.lock.signal;
  const atomic = d.deps.tenants.sharesCluster(d.deps.cluster, op.project, target);
  const t0 = performance.now();
  let committed = false;
  try {
    // Recorded first in the target's own transaction: it commits only if the DDL does.
    const firstStatement = atomic
      ? d.deps.ledger.markStepStatement(op.id, step, tenant, okState, null, phase === 'apply')
      : undefined;
    // The target's statements get a signal only when the caller can abort the run: dbx's abortable
    // path costs ~20 µs of CPU per statement, a quarter of a tenant's client time here. Losing the
    // lock (or compensation, which is never cancelled) lets the statements in flight finish; the
    // fan-out starts no new one and the operation stops at the step boundary.
    const transport = phase === 'apply' && d.user ? { signal } : {};
    const opts = firstStatement ? { ...transport, firstStatement } : transport;
    if (sqlOf) {
      // SQL text: setup, ledger record and DDL go as one multi-statement query (one round trip).
      const text = (schema: string | null): string => {
        const sql = sqlOf.call(handler, { ...d.ctx, signal, target, schema });
        if (typeof sql !== 'string') {
          throw new SchemaOpsError(
            'SCHEMAOPS_INVALID_INPUT',
            `${sqlOf.name || 'applySql'} must return a string`,
            {
              details: { operationId: op.id, step, tenant },
            },
          );
        }
        const control = findTransactionControl(sql);
        if (control) {
          // It would commit the ledger record with half the DDL, or leave a transaction open
          // on a pooled connection: the target's SQL runs as one transaction that schemaops owns.
          throw new SchemaOpsError(
            'SCHEMAOPS_INVALID_INPUT',
            `${sqlOf.name || 'applySql'} must not contain transaction control (${control.keyword} in statement ${control.index + 1})`,
            { details: { operationId: op.id, step, tenant } },
          );
        }
        return sql;
      };
      if (d.deps.tenants.execSql) await d.deps.tenants.execSql(op.project, target, text, opts);
      else await d.deps.tenants.withTarget(op.project, target, (tx, schema) => tx.exec(text(schema)), opts);
    } else if (callback) {
      await d.deps.tenants.withTarget(
        op.project,
        target,
        (tx, schema) => callback.call(handler, { ...d.ctx, signal, tx, target, schema }),
        opts,
      );
    } else {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'no compensate callback');
    }
    committed = true;
    if (phase === 'apply') d.committed.add(key);
    else d.committed.delete(key);
    if (!atomic)
      await d.deps.ledger.markStep(d.deps.cluster, op.id, step, tenant, okState, null, phase === 'apply');
  } catch (e) {
    if (!committed) {
      // apply: the step failed (its transaction rolled back); compensate: it is still applied.
      const state: StepState = phase === 'apply' ? 'failed' : 'succeeded';
      const msg = phase === 'apply' ? errorMessage(e) : `compensation: ${errorMessage(e)}`;
      await markQuietly(d.deps, op.id, step, tenant, state, msg, phase === 'apply');
    }
    d.deps.telemetry.stepEvent(d.op, step, tenant, phase === 'apply' ? 'failed' : 'succeeded', phase, t0, e);
    throw e;
  }
  d.deps.telemetry.stepEvent(d.op, step, tenant, okState, phase, t0, null);
}
