/**
 * go-oversync protocol v1 wire shapes (JSON over HTTP), shared by the server and the client.
 * Field names, optionality and omission rules follow the reference's Go structs: a field marked
 * optional here is `omitempty` there (absent when empty / zero).
 */
import { z } from 'zod';

export const SYNC_PROTOCOL_VERSION = 'v1';
/** Request header carrying the device's sync source id (the only source of truth for it). */
export const SOURCE_ID_HEADER = 'Oversync-Source-ID';

export type WireOp = 'INSERT' | 'UPDATE' | 'DELETE';
export const WIRE_OPS: readonly WireOp[] = ['INSERT', 'UPDATE', 'DELETE'];

/** `{<sync_key_column>: <string>}`; uuid keys are canonical dashed lowercase. */
export type SyncKey = Record<string, unknown>;

export type ConnectResolution =
  | 'remote_authoritative'
  | 'initialize_local'
  | 'initialize_empty'
  | 'retry_later';

/** Every error code a v1 server answers with (`{"error": code, "message": text}`). */
export const WIRE_ERROR_CODES = [
  'invalid_request',
  'authentication_failed',
  'method_not_allowed',
  'service_unavailable',
  'connect_invalid',
  'connect_failed',
  'push_session_invalid',
  'push_session_create_failed',
  'scope_uninitialized',
  'scope_initializing',
  'initialization_stale',
  'initialization_expired',
  'history_pruned',
  'source_sequence_out_of_order',
  'source_sequence_changed',
  'source_retired',
  'push_chunk_invalid',
  'push_chunk_out_of_order',
  'push_chunk_failed',
  'push_session_forbidden',
  'push_session_not_found',
  'push_session_expired',
  'push_commit_invalid',
  'push_conflict',
  'push_row_invalid',
  'push_session_commit_failed',
  'push_session_delete_failed',
  'committed_bundle_chunk_invalid',
  'committed_bundle_not_found',
  'committed_bundle_rows_failed',
  'pull_failed',
  'bundle_change_watch_forbidden',
  'bundle_change_watch_disabled',
  'bundle_change_watch_failed',
  'snapshot_session_invalid',
  'source_replacement_invalid',
  'snapshot_session_create_failed',
  'snapshot_chunk_invalid',
  'snapshot_session_not_found',
  'snapshot_session_forbidden',
  'snapshot_session_expired',
  'snapshot_chunk_failed',
  'snapshot_session_delete_failed',
  'status_failed',
  'health_failed',
] as const;
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

export interface ConnectRequest {
  has_local_pending_rows: boolean;
}
export interface PushSessionCreateRequest {
  source_bundle_id: number;
  planned_row_count: number;
  initialization_id?: string;
}
export interface PushRequestRow {
  schema: string;
  table: string;
  key: SyncKey;
  op: string;
  base_row_version: number;
  /** Present (even as `null`) means present: the reference rejects `"payload": null` on DELETE. */
  payload?: unknown;
}
export interface PushSessionChunkRequest {
  start_row_ordinal: number;
  rows: PushRequestRow[];
}
export type SourceReplacementReason =
  | 'history_pruned'
  | 'source_sequence_out_of_order'
  | 'source_sequence_changed'
  | 'source_retired';
export interface SnapshotSourceReplacement {
  previous_source_id: string;
  new_source_id: string;
  reason: string;
}
export interface SnapshotSessionCreateRequest {
  source_replacement?: SnapshotSourceReplacement;
}

/**
 * Go's `encoding/json` matches object keys to struct fields case-insensitively (an exact match
 * wins). This renames such keys to the field's spelling so a plain zod object can validate them.
 */
export function matchGoFieldNames(value: unknown, fields: readonly string[]): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const src = value as Record<string, unknown>;
  let allExact = true;
  for (const k in src) {
    if (!fields.includes(k)) {
      allExact = false;
      break;
    }
  }
  if (allExact) return value;
  const out: Record<string, unknown> = {};
  const exact = new Set(fields);
  for (const k of Object.keys(src)) {
    if (exact.has(k)) continue;
    const lower = k.toLowerCase();
    const field = fields.find((f) => f.toLowerCase() === lower);
    const name = field === undefined ? k : Object.hasOwn(src, field) ? undefined : field;
    // defineProperty: a key like "__proto__" must stay an own (unknown) field, never a prototype.
    if (name !== undefined)
      Object.defineProperty(out, name, {
        value: src[k],
        enumerable: true,
        writable: true,
        configurable: true,
      });
  }
  for (const f of fields) if (Object.hasOwn(src, f)) out[f] = src[f];
  return out;
}

/** A Go int64 field: JSON integer; `null` or missing decode to 0. */
const goInt = z.preprocess((v) => (v === null || v === undefined ? 0 : v), z.number().int());
/** A Go bool field: `null` or missing decode to false. */
const goBool = z.preprocess((v) => (v === null || v === undefined ? false : v), z.boolean());
/** A Go string field: `null` or missing decode to "". */
const goString = z.preprocess((v) => (v === null || v === undefined ? '' : v), z.string());

function goStruct<T extends z.ZodRawShape>(shape: T, strict = false) {
  const fields = Object.keys(shape);
  const obj = strict ? z.strictObject(shape) : z.object(shape);
  return z.preprocess((v) => matchGoFieldNames(v, fields), obj);
}

export const connectRequestSchema = goStruct({ has_local_pending_rows: goBool });
export const pushSessionCreateRequestSchema = goStruct({
  source_bundle_id: goInt,
  planned_row_count: goInt,
  initialization_id: goString,
});
export const pushRequestRowSchema = z.preprocess(
  (v) => matchGoFieldNames(v, ['schema', 'table', 'key', 'op', 'base_row_version', 'payload']),
  z.object({
    schema: goString,
    table: goString,
    key: z.preprocess((v) => (v === undefined ? null : v), z.record(z.string(), z.unknown()).nullable()),
    op: goString,
    base_row_version: goInt,
    payload: z.unknown().optional(),
  }),
);
export const pushSessionChunkRequestSchema = goStruct({
  start_row_ordinal: goInt,
  rows: z.preprocess((v) => (v === undefined ? null : v), z.array(pushRequestRowSchema).nullable()),
});
export const snapshotSourceReplacementSchema = goStruct(
  { previous_source_id: goString, new_source_id: goString, reason: goString },
  true,
);
export const snapshotSessionCreateRequestSchema = goStruct(
  { source_replacement: snapshotSourceReplacementSchema.nullable().optional() },
  true,
);

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

export interface ErrorResponse {
  error: string;
  message: string;
}
export interface PushConflictDetails {
  schema: string;
  table: string;
  key: SyncKey;
  op: string;
  base_row_version: number;
  server_row_version: number;
  server_row_deleted: boolean;
  /** Full wire after-image of the live server row, or `null` when missing or deleted. */
  server_row: unknown;
  /**
   * Extension (ignored by go-oversync v1 clients): why the row was refused. Absent or
   * `row_version` for the reference's base-version conflict; the others come from a commit or
   * chunk the database refused because of this row's data.
   */
  reason?: PushConflictReason;
  /** Extension: the constraint the row violated (`foreign_key`, `unique`, `not_null`, `check`, `exclusion`). */
  constraint?: string;
  /** Extension: the column whose value was refused (`invalid_value`, `not_null`). */
  column?: string;
  /**
   * Extension, `foreign_key` only: the parent row this row references and the server does not
   * have live (`row_version` 0 = never existed, `deleted` = tombstoned at that version).
   */
  references?: {
    schema: string;
    table: string;
    key: SyncKey;
    row_version: number;
    deleted: boolean;
  };
}
export type PushConflictReason =
  | 'row_version'
  | 'foreign_key'
  | 'unique'
  | 'not_null'
  | 'check'
  | 'exclusion'
  | 'invalid_value';
export interface PushConflictResponse extends ErrorResponse {
  conflict?: PushConflictDetails;
}
export interface SourceRetiredResponse extends ErrorResponse {
  source_id: string;
  replaced_by_source_id?: string;
}
export interface ConnectResponse {
  resolution: ConnectResolution;
  initialization_id?: string;
  /** RFC 3339 with nanoseconds, UTC, trailing zeros trimmed. */
  lease_expires_at?: string;
  retry_after_seconds?: number;
}
export interface PushSessionCreateResponse {
  status: 'staging' | 'already_committed';
  push_id?: string;
  planned_row_count?: number;
  next_expected_row_ordinal?: number;
  bundle_seq?: number;
  source_id?: string;
  source_bundle_id?: number;
  row_count?: number;
  bundle_hash?: string;
}
export interface PushSessionChunkResponse {
  push_id: string;
  next_expected_row_ordinal: number;
}
export interface PushSessionCommitResponse {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  row_count: number;
  bundle_hash: string;
}
export interface BundleRow {
  schema: string;
  table: string;
  key: SyncKey;
  op: WireOp;
  row_version: number;
  /** Absent for DELETE. */
  payload?: unknown;
}
export interface Bundle {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  row_count?: number;
  bundle_hash?: string;
  rows: BundleRow[];
}
export interface PullResponse {
  stable_bundle_seq: number;
  bundles: Bundle[];
  has_more: boolean;
}
export interface CommittedBundleRowsResponse {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  row_count: number;
  bundle_hash: string;
  rows: BundleRow[];
  next_row_ordinal: number;
  has_more: boolean;
}
export interface SnapshotSession {
  snapshot_id: string;
  snapshot_bundle_seq: number;
  row_count: number;
  byte_count?: number;
  expires_at: string;
}
export interface SnapshotRow {
  schema: string;
  table: string;
  key: SyncKey;
  row_version: number;
  payload: unknown;
}
export interface SnapshotChunkResponse {
  snapshot_id: string;
  snapshot_bundle_seq: number;
  rows: SnapshotRow[];
  next_row_ordinal: number;
  has_more: boolean;
}
export interface RegisteredTableSpec {
  schema: string;
  table: string;
  sync_key_columns?: string[];
}
export interface BundleCapabilitiesLimits {
  max_rows_per_bundle?: number;
  max_bytes_per_bundle?: number;
  max_bundles_per_pull?: number;
  default_rows_per_push_chunk?: number;
  max_rows_per_push_chunk?: number;
  push_session_ttl_seconds?: number;
  default_rows_per_committed_bundle_chunk?: number;
  max_rows_per_committed_bundle_chunk?: number;
  default_rows_per_snapshot_chunk?: number;
  max_rows_per_snapshot_chunk?: number;
  snapshot_session_ttl_seconds?: number;
  max_rows_per_snapshot_session?: number;
  max_bytes_per_snapshot_session?: number;
  initialization_lease_ttl_seconds?: number;
}
export interface CapabilitiesResponse {
  protocol_version: string;
  schema_version: number;
  app_name?: string;
  registered_tables?: string[];
  registered_table_specs?: RegisteredTableSpec[];
  features: Record<string, boolean>;
  bundle_limits?: BundleCapabilitiesLimits;
}
export type Lifecycle = 'running' | 'shutting_down' | 'closed';
export interface StatusResponse {
  status: 'healthy' | 'unhealthy';
  version: string;
  app_name: string;
  lifecycle: Lifecycle;
  accepting_operations: boolean;
  inflight_operations: number;
  registered_tables: string[];
  features: Record<string, boolean>;
  user_state_retention_floor_ahead_count: number;
  latest_bundle_seq_max: number;
  retained_bundle_floor_min: number;
  retained_bundle_floor_max: number;
  retained_bundle_window_min: number;
  retained_bundle_window_max: number;
  history_pruned_error_count: number;
  accepted_push_replay_count: number;
  rejected_registered_write_count: number;
  committed_bundle_count: number;
  committed_bundle_bytes: number;
}
/** `data:` of an SSE `event: bundle` frame on `GET /sync/watch`. */
export interface BundleChangeEvent {
  bundle_seq: number;
  source_id?: string;
  source_bundle_id?: number;
}

// Response schemas (the client validates what it receives; unknown fields are ignored as Go does).
const int = z.number().int();
export const syncKeySchema = z.record(z.string(), z.unknown());
export const errorResponseSchema = z.object({ error: z.string(), message: z.string() }).loose();
export const pushConflictDetailsSchema = z.object({
  schema: z.string(),
  table: z.string(),
  key: syncKeySchema,
  op: z.string(),
  base_row_version: int,
  server_row_version: int,
  server_row_deleted: z.boolean(),
  server_row: z.unknown(),
  reason: z
    .enum(['row_version', 'foreign_key', 'unique', 'not_null', 'check', 'exclusion', 'invalid_value'])
    .optional()
    .catch(undefined),
  constraint: z.string().optional().catch(undefined),
  column: z.string().optional().catch(undefined),
  references: z
    .object({
      schema: z.string(),
      table: z.string(),
      key: syncKeySchema,
      row_version: int,
      deleted: z.boolean(),
    })
    .optional()
    .catch(undefined),
});
export const connectResponseSchema = z.object({
  resolution: z.enum(['remote_authoritative', 'initialize_local', 'initialize_empty', 'retry_later']),
  initialization_id: z.string().optional(),
  lease_expires_at: z.string().optional(),
  retry_after_seconds: int.optional(),
});
export const pushSessionCreateResponseSchema = z.object({
  status: z.enum(['staging', 'already_committed']),
  push_id: z.string().optional(),
  planned_row_count: int.optional(),
  next_expected_row_ordinal: int.optional(),
  bundle_seq: int.optional(),
  source_id: z.string().optional(),
  source_bundle_id: int.optional(),
  row_count: int.optional(),
  bundle_hash: z.string().optional(),
});
export const pushSessionChunkResponseSchema = z.object({
  push_id: z.string(),
  next_expected_row_ordinal: int,
});
export const pushSessionCommitResponseSchema = z.object({
  bundle_seq: int,
  source_id: z.string(),
  source_bundle_id: int,
  row_count: int,
  bundle_hash: z.string(),
});
export const bundleRowSchema = z.object({
  schema: z.string(),
  table: z.string(),
  key: syncKeySchema,
  op: z.enum(['INSERT', 'UPDATE', 'DELETE']),
  row_version: int,
  payload: z.unknown().optional(),
});
export const bundleSchema = z.object({
  bundle_seq: int,
  source_id: z.string(),
  source_bundle_id: int,
  row_count: int.optional(),
  bundle_hash: z.string().optional(),
  rows: z.array(bundleRowSchema).nullable(),
});
export const pullResponseSchema = z.object({
  stable_bundle_seq: int,
  bundles: z.array(bundleSchema).nullable(),
  has_more: z.boolean(),
});
export const committedBundleRowsResponseSchema = z.object({
  bundle_seq: int,
  source_id: z.string(),
  source_bundle_id: int,
  row_count: int,
  bundle_hash: z.string(),
  rows: z.array(bundleRowSchema).nullable(),
  next_row_ordinal: int,
  has_more: z.boolean(),
});
export const snapshotSessionSchema = z.object({
  snapshot_id: z.string(),
  snapshot_bundle_seq: int,
  row_count: int,
  byte_count: int.optional(),
  expires_at: z.string(),
});
export const snapshotRowSchema = z.object({
  schema: z.string(),
  table: z.string(),
  key: syncKeySchema,
  row_version: int,
  payload: z.unknown(),
});
export const snapshotChunkResponseSchema = z.object({
  snapshot_id: z.string(),
  snapshot_bundle_seq: int,
  rows: z.array(snapshotRowSchema).nullable(),
  next_row_ordinal: int,
  has_more: z.boolean(),
});
export const capabilitiesResponseSchema = z.object({
  protocol_version: z.string(),
  schema_version: int,
  app_name: z.string().optional(),
  registered_tables: z.array(z.string()).optional(),
  registered_table_specs: z
    .array(
      z.object({ schema: z.string(), table: z.string(), sync_key_columns: z.array(z.string()).optional() }),
    )
    .optional(),
  features: z.record(z.string(), z.boolean()),
  bundle_limits: z.record(z.string(), z.number()).optional(),
});
export const bundleChangeEventSchema = z.object({
  bundle_seq: int,
  source_id: z.string().optional(),
  source_bundle_id: int.optional(),
});
