/**
 * go-oversync protocol v1 responses: their shapes, and the zod schemas the client checks what it
 * receives with (unknown fields are ignored, as Go does).
 * Field names, optionality and omission rules follow the reference's Go structs: a field marked
 * optional here is `omitempty` there (absent when empty / zero).
 */
import { z } from 'zod';
import type { ConnectResolution, SyncKey, WireOp } from './wire-protocol.js';

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
