/**
 * The checks on what callers hand to `SchemaOps` (run input, reconcile options, list filters, the
 * tenant list a source returns), each refusing with SCHEMAOPS_INVALID_INPUT.
 */
import { formatOptionIssues, optionIssues } from '@x/core';
import { z } from 'zod';
import { SchemaOpsError } from '../errors.js';
import { handlerSchema } from '../options.js';
import { OPERATION_STATUSES, type OperationStatus } from '../types.js';

const signalShape = z.custom<AbortSignal>((v) => v instanceof AbortSignal, {
  message: 'signal must be an AbortSignal',
});

export const runInputSchema = z.strictObject({
  project: z.string().min(1).max(200),
  type: z.string().min(1).max(200),
  request: z.unknown(),
  skipBaseDdl: z.boolean().optional(),
  idempotencyKey: z.string().min(1).max(255).optional(),
  physicalDdlRequired: z.boolean().optional(),
  handler: handlerSchema.optional(),
  concurrency: z.number().int().positive().max(256).optional(),
  signal: signalShape.optional(),
});

export const reconcileOptionsSchema = z.strictObject({
  handler: handlerSchema.optional(),
  concurrency: z.number().int().positive().max(256).optional(),
  lockWaitMs: z.number().int().nonnegative().optional(),
  signal: signalShape.optional(),
});

export const uuidShape = z.uuid();

export const listFilterSchema = z.strictObject({
  project: z.string().optional(),
  statuses: z
    .array(z.enum(OPERATION_STATUSES as unknown as [OperationStatus, ...OperationStatus[]]))
    .optional(),
  limit: z.number().int().positive().optional(),
  signal: signalShape.optional(),
});

/** SCHEMAOPS_INVALID_INPUT naming each problem by its key path (`concurrencyy: unknown option`). */
export function invalidInput(what: string, error: z.ZodError): SchemaOpsError {
  return new SchemaOpsError(
    'SCHEMAOPS_INVALID_INPUT',
    `invalid ${what}: ${formatOptionIssues(optionIssues(error))}`,
    {
      details: { issues: error.issues },
    },
  );
}

/** The tenant list of a run: non-empty ids, each once (SCHEMAOPS_INVALID_INPUT otherwise). */
export function checkTenants(tenants: readonly string[]): void {
  const seen = new Set<string>();
  for (const t of tenants) {
    if (typeof t !== 'string' || t.length === 0) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'the tenant source returned an empty tenant id');
    }
    if (seen.has(t)) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'the tenant source returned a tenant twice', {
        details: { tenant: t },
      });
    }
    seen.add(t);
  }
}
