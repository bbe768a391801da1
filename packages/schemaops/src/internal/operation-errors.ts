import { SchemaOpsError } from '../errors.js';
import type { OperationSummary } from '../types.js';

export function replayError(s: OperationSummary): SchemaOpsError {
  const code =
    s.status === 'needs_repair' && s.compensationError !== null
      ? 'SCHEMAOPS_COMPENSATION_FAILED'
      : 'SCHEMAOPS_STEP_FAILED';
  return new SchemaOpsError(
    code,
    `operation ${s.id} already ended ${s.status}: ${s.lastError ?? 'no error recorded'}`,
    {
      details: {
        operationId: s.id,
        project: s.project,
        status: s.status,
        replayed: true,
        errorCode: s.lastErrorCode,
      },
    },
  );
}

export function closedError(): SchemaOpsError {
  return new SchemaOpsError('SCHEMAOPS_CLOSED', 'schemaops is closed');
}

export function notFound(id: string): SchemaOpsError {
  return new SchemaOpsError('SCHEMAOPS_NOT_FOUND', `no operation ${id} in the ledger`, {
    details: { operationId: id },
  });
}
