import { CodedError, type CodedErrorOptions } from '@x/core';

/** `retryable`, `details` and `cause`, as for every `@x/core` CodedError. */
export type SchemaOpsErrorOptions = CodedErrorOptions;

/**
 * The one error class of `@x/schemaops`. Check errors by `code` (two copies of the package may be
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

/** Every {@link SchemaOpsErrorCode}, for exhaustive handling or validation of a serialized error's code. */
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

/**
 * The error every `@x/schemaops` call rejects with. code, message, retryable, details and cause come
 * from `@x/core`'s CodedError.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSchemaOps, SchemaOpsError, schemaPerTenant } from '@x/schemaops';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const ops = createSchemaOps({ cluster: db, tenants: schemaPerTenant({ cluster: db }) });
 * try {
 *   await ops.run({ project: 'acme', type: 'add_field', request: { column: 'color' } }); // never defined
 * } catch (e) {
 *   if (!(e instanceof SchemaOpsError)) throw e;
 *   console.log(e.code, e.details); // SCHEMAOPS_UNKNOWN_OPERATION { type: 'add_field' }
 * }
 * await ops.close();
 * await db.close();
 * ```
 */
export class SchemaOpsError extends CodedError<SchemaOpsErrorCode> {
  /** Always `'SchemaOpsError'`: what {@link isSchemaOpsError} checks, across copies of the package. */
  override readonly name = 'SchemaOpsError';
}

/**
 * True for a {@link SchemaOpsError} from any copy of `@x/schemaops` (checked by `name` and `code`,
 * not by `instanceof`), and with the given `code` when one is passed.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSchemaOps, isSchemaOpsError, schemaPerTenant } from '@x/schemaops';
 * import { z } from 'zod';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const ops = createSchemaOps({
 *   cluster: db,
 *   tenants: schemaPerTenant({ cluster: db }),
 *   operations: {
 *     add_field: {
 *       request: z.object({ column: z.string().regex(/^[a-z_]+$/) }),
 *       applySql: ({ request }) => `alter table items add column if not exists ${request.column} text`,
 *     },
 *   },
 * });
 * // An HTTP handler: a bad request is the client's fault, a held project lock means "try later".
 * async function addField(project: string, column: string): Promise<number> {
 *   try {
 *     await ops.run({ project, type: 'add_field', request: { column } });
 *     return 200;
 *   } catch (e) {
 *     if (isSchemaOpsError(e, 'SCHEMAOPS_INVALID_INPUT')) return 400;
 *     if (isSchemaOpsError(e, 'SCHEMAOPS_LOCKED')) return 409;
 *     throw e;
 *   }
 * }
 * console.log(await addField('acme', 'color; drop table items')); // 400: the request schema refused it
 * await ops.close();
 * await db.close();
 * ```
 */
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
