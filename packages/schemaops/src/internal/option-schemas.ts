import { formatOptionIssues, optionIssues } from '@x/core';
import type { Cluster } from '@x/dbx';
import { z } from 'zod';
import { SchemaOpsError } from '../errors.js';

/** An `@x/dbx` Cluster (checked by shape: another copy of `@x/dbx` may be loaded). */
export const clusterSchema = z.custom<Cluster>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    ['runTx', 'query', 'connect'].every((m) => typeof (v as Record<string, unknown>)[m] === 'function'),
  { message: 'cluster must be an @x/dbx Cluster' },
);

/** SCHEMAOPS_INVALID_OPTIONS with the zod issues; the message names each problem by its key path. */
export function invalidOptions(what: string, error: z.ZodError): SchemaOpsError {
  return new SchemaOpsError(
    'SCHEMAOPS_INVALID_OPTIONS',
    `invalid ${what}: ${formatOptionIssues(optionIssues(error))}`,
    {
      details: { issues: error.issues },
    },
  );
}
