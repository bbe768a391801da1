/**
 * The zod schemas the OpenAPI document needs beyond the wire schemas of src/shared: the error body
 * of a set of codes, the operator status body, the document's own body.
 */
import { z } from 'zod';
import {
  errorResponseSchema,
  pushConflictDetailsSchema,
  type StatusResponse,
  type WireErrorCode,
} from '../../shared/wire.js';

const int = z.number().int();

/**
 * The error body `{"error": code, "message": text}` of `codes`, with the extra fields those codes
 * carry (`push_conflict`: `conflict`; `push_row_invalid`: `row_ordinal` and `conflict`;
 * `source_retired`: `source_id` and `replaced_by_source_id`) and nothing else.
 */
export function errorBodySchema(codes: readonly WireErrorCode[]) {
  const has = (c: WireErrorCode) => codes.includes(c);
  const [first, ...rest] = codes;
  if (first === undefined) throw new Error('an error body needs at least one code');
  return z.strictObject({
    ...errorResponseSchema.shape,
    error: z.enum([first, ...rest]).meta({ description: 'The error code.' }),
    message: z.string().meta({ description: 'What went wrong, for people.' }),
    ...(has('push_conflict') || has('push_row_invalid')
      ? {
          conflict: pushConflictDetailsSchema
            .optional()
            .meta({ description: '`push_conflict`, `push_row_invalid`: the refused row and why.' }),
        }
      : {}),
    ...(has('push_row_invalid')
      ? { row_ordinal: int.optional().meta({ description: '`push_row_invalid`: the row in the bundle.' }) }
      : {}),
    ...(has('source_retired')
      ? {
          source_id: z.string().optional().meta({ description: '`source_retired`: the retired source.' }),
          replaced_by_source_id: z
            .string()
            .optional()
            .meta({ description: '`source_retired`: the source that replaced it, when known.' }),
        }
      : {}),
  });
}

/** `GET /syncx/status` and `/syncx/health`. */
export const statusResponseSchema = z.object({
  status: z.enum(['healthy', 'unhealthy']),
  version: z.string(),
  app_name: z.string(),
  lifecycle: z.enum(['running', 'shutting_down', 'closed']),
  accepting_operations: z.boolean(),
  inflight_operations: int,
  registered_tables: z.array(z.string()),
  features: z.record(z.string(), z.boolean()),
  user_state_retention_floor_ahead_count: int,
  latest_bundle_seq_max: int,
  retained_bundle_floor_min: int,
  retained_bundle_floor_max: int,
  retained_bundle_window_min: int,
  retained_bundle_window_max: int,
  history_pruned_error_count: int,
  accepted_push_replay_count: int,
  rejected_registered_write_count: int,
  committed_bundle_count: int,
  committed_bundle_bytes: int,
}) satisfies z.ZodType<StatusResponse>;

/** `GET /sync/openapi.json`: an OpenAPI 3.1 document. */
export const openApiDocumentSchema = z
  .object({ openapi: z.string(), info: z.record(z.string(), z.unknown()) })
  .loose()
  .meta({ description: 'An OpenAPI 3.1 document.' });
