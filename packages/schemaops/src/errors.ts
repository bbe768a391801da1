import { CodedError, type CodedErrorOptions } from '@x/core';

/** `retryable`, `details` and `cause`, as for every @x/core CodedError. */
export type SchemaOpsErrorOptions = CodedErrorOptions;

/**
 * The one error class of @x/schemaops. Check errors by `code` (two copies of the package may be
 * loaded, so never rely on `instanceof`). Driver / callback errors are kept as `cause`; request values
 * never appear in messages.
 */
export type SchemaOpsErrorCode =
  | 'SCHEMAOPS_INVALID_OPTIONS'
  | 'SCHEMAOPS_INVALID_INPUT'
  | 'SCHEMAOPS_UNKNOWN_OPERATION'
  | 'SCHEMAOPS_LOCKED'
  | 'SCHEMAOPS_LOCK_LOST'
  | 'SCHEMAOPS_STEP_FAILED'
  | 'SCHEMAOPS_COMPENSATION_FAILED'
  | 'SCHEMAOPS_IDEMPOTENCY_CONFLICT'
  | 'SCHEMAOPS_NOT_FOUND'
  | 'SCHEMAOPS_LEDGER_FAILED'
  | 'SCHEMAOPS_CLOSED';

export const SCHEMAOPS_ERROR_CODES: readonly SchemaOpsErrorCode[] = Object.freeze([
  'SCHEMAOPS_INVALID_OPTIONS',
  'SCHEMAOPS_INVALID_INPUT',
  'SCHEMAOPS_UNKNOWN_OPERATION',
  'SCHEMAOPS_LOCKED',
  'SCHEMAOPS_LOCK_LOST',
  'SCHEMAOPS_STEP_FAILED',
  'SCHEMAOPS_COMPENSATION_FAILED',
  'SCHEMAOPS_IDEMPOTENCY_CONFLICT',
  'SCHEMAOPS_NOT_FOUND',
  'SCHEMAOPS_LEDGER_FAILED',
  'SCHEMAOPS_CLOSED',
]);

/** code, message, retryable, details and cause come from @x/core's CodedError. */
export class SchemaOpsError extends CodedError<SchemaOpsErrorCode> {
  override readonly name = 'SchemaOpsError';
}

export function isSchemaOpsError(e: unknown, code?: SchemaOpsErrorCode): e is SchemaOpsError {
  return (
    typeof e === 'object' &&
    e !== null &&
    (e as { name?: unknown }).name === 'SchemaOpsError' &&
    typeof (e as { code?: unknown }).code === 'string' &&
    (code === undefined || (e as { code: string }).code === code)
  );
}

/** A short, parameter-free description of any thrown value, for the ledger and logs. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message || e.name;
  return typeof e === 'string' ? e : (JSON.stringify(e) ?? String(e));
}

/** The stable code of an error, if it has one (ours, dbx's, or a SQLSTATE). */
export function errorCode(e: unknown): string | null {
  if (typeof e === 'object' && e !== null) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return null;
}
