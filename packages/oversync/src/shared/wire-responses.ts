/**
 * go-oversync protocol v1 responses: their shapes, and the zod schemas the client checks what it
 * receives with (unknown fields are ignored, as Go does).
 * Field names, optionality and omission rules follow the reference's Go structs: a field marked
 * optional here is `omitempty` there (absent when empty / zero).
 */
import { z } from 'zod';
import type { ConnectResolution, SyncKey, WireOp } from './wire-protocol.js';

/**
 * The body of every v1 error answer (any non-2xx JSON response): `error` is a {@link WireErrorCode},
 * `message` a text for people. `push_conflict` and `source_retired` answers add fields
 * ({@link PushConflictResponse}, {@link SourceRetiredResponse}).
 */
export interface ErrorResponse {
  error: string;
  message: string;
}
/** The row a push conflicted on: what the device sent, and the server's current version of it. */
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
/** Why a pushed row was refused: a stale row version, or the constraint or value it broke. */
export type PushConflictReason =
  | 'row_version'
  | 'foreign_key'
  | 'unique'
  | 'not_null'
  | 'check'
  | 'exclusion'
  | 'invalid_value';
/**
 * A `409 push_conflict` body, answered when a pushed row's `base_row_version` no longer matches the
 * server's row (or the database refused the row's data): the error, with the conflicting row when the
 * server names one.
 */
export interface PushConflictResponse extends ErrorResponse {
  conflict?: PushConflictDetails;
}
/**
 * A `409 source_retired` body, answered to a push or a snapshot request made with a source id that was
 * replaced: the retired source id and, when known, the one that replaced it.
 */
export interface SourceRetiredResponse extends ErrorResponse {
  source_id: string;
  replaced_by_source_id?: string;
}
/** The answer of `POST /sync/connect`: a {@link ConnectResolution}, and the lease when the device initializes the scope. */
export interface ConnectResponse {
  resolution: ConnectResolution;
  initialization_id?: string;
  /** RFC 3339 with nanoseconds, UTC, trailing zeros trimmed. */
  lease_expires_at?: string;
  retry_after_seconds?: number;
}
/**
 * The answer of `POST /sync/push-sessions`: `staging` with a `push_id` to upload chunks into, or
 * `already_committed` with the metadata of the bundle this source already committed under that
 * `source_bundle_id` (a push retried after it was committed).
 */
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
/** The answer of a push chunk upload: the row ordinal the session expects next. */
export interface PushSessionChunkResponse {
  push_id: string;
  next_expected_row_ordinal: number;
}
/** The answer of a push commit: the committed bundle's sequence, row count and hash. */
export interface PushSessionCommitResponse {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  row_count: number;
  bundle_hash: string;
}
/**
 * The answer of `POST /sync/push`: the committed bundle, `already_committed` when the source
 * bundle was committed before (an idempotent replay, as a push session create answers it).
 */
export interface PushBundleResponse extends PushSessionCommitResponse {
  status: 'committed' | 'already_committed';
}
/** One row change of a committed bundle, with the row version it produced. */
export interface BundleRow {
  schema: string;
  table: string;
  key: SyncKey;
  op: WireOp;
  row_version: number;
  /** Absent for DELETE. */
  payload?: unknown;
}
/** A committed bundle: one source bundle's rows, in the scope's order (`bundle_seq`). */
export interface Bundle {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  row_count?: number;
  bundle_hash?: string;
  rows: BundleRow[];
}
/** The answer of `GET /sync/pull`: bundles after the one asked for, up to the stable point. */
export interface PullResponse {
  stable_bundle_seq: number;
  bundles: Bundle[];
  has_more: boolean;
}
/** The answer of `GET /sync/committed-bundles/{bundle_seq}/rows`: one page of a committed bundle's rows. */
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
/**
 * The answer of `POST /sync/snapshot-sessions`: a frozen copy of the scope's live rows at
 * `snapshot_bundle_seq`, read in chunks with `GET /sync/snapshot-sessions/{snapshot_id}` until
 * `expires_at` (RFC 3339, UTC).
 */
export interface SnapshotSession {
  snapshot_id: string;
  snapshot_bundle_seq: number;
  row_count: number;
  byte_count?: number;
  expires_at: string;
}
/** One live row of a snapshot chunk: its key, its current version and its full payload (no `op`). */
export interface SnapshotRow {
  schema: string;
  table: string;
  key: SyncKey;
  row_version: number;
  payload: unknown;
}
/**
 * The answer of `GET /sync/snapshot-sessions/{snapshot_id}`: one page of the snapshot's rows after
 * `after_row_ordinal`; pass `next_row_ordinal` back to read the next page while `has_more`.
 */
export interface SnapshotChunkResponse {
  snapshot_id: string;
  snapshot_bundle_seq: number;
  rows: SnapshotRow[];
  next_row_ordinal: number;
  has_more: boolean;
}
/** A table the server syncs (in {@link CapabilitiesResponse}), with its sync key column(s). */
export interface RegisteredTableSpec {
  schema: string;
  table: string;
  sync_key_columns?: string[];
}
/** The server's size limits, as `GET /sync/capabilities` announces them. */
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
/** The answer of `GET /sync/capabilities`: protocol, schema version, tables, features and limits. */
export interface CapabilitiesResponse {
  protocol_version: string;
  schema_version: number;
  app_name?: string;
  registered_tables?: string[];
  registered_table_specs?: RegisteredTableSpec[];
  features: Record<string, boolean>;
  bundle_limits?: BundleCapabilitiesLimits;
}
/** Where a sync service is in its life: serving, draining on close, or closed. */
export type Lifecycle = 'running' | 'shutting_down' | 'closed';
/** The answer of `GET /syncx/status` and `GET /syncx/health`: health, lifecycle and retention counters. */
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
/** Validates a {@link SyncKey}. */
export const syncKeySchema = z.record(z.string(), z.unknown());
/** Validates an {@link ErrorResponse} (further fields kept). */
export const errorResponseSchema = z.object({ error: z.string(), message: z.string() }).loose();
/** Validates {@link PushConflictDetails}. */
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
/** Validates a {@link ConnectResponse}. */
export const connectResponseSchema = z.object({
  resolution: z.enum(['remote_authoritative', 'initialize_local', 'initialize_empty', 'retry_later']),
  initialization_id: z.string().optional(),
  lease_expires_at: z.string().optional(),
  retry_after_seconds: int.optional(),
});
/** Validates a {@link PushSessionCreateResponse}. */
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
/** Validates a {@link PushSessionChunkResponse}. */
export const pushSessionChunkResponseSchema = z.object({
  push_id: z.string(),
  next_expected_row_ordinal: int,
});
/** Validates a {@link PushSessionCommitResponse}. */
export const pushSessionCommitResponseSchema = z.object({
  bundle_seq: int,
  source_id: z.string(),
  source_bundle_id: int,
  row_count: int,
  bundle_hash: z.string(),
});
/** Validates a {@link PushBundleResponse}. */
export const pushBundleResponseSchema = pushSessionCommitResponseSchema.extend({
  status: z.enum(['committed', 'already_committed']),
});
/** Validates a {@link BundleRow}. */
export const bundleRowSchema = z.object({
  schema: z.string(),
  table: z.string(),
  key: syncKeySchema,
  op: z.enum(['INSERT', 'UPDATE', 'DELETE']),
  row_version: int,
  payload: z.unknown().optional(),
});
/** Validates a {@link Bundle}. */
export const bundleSchema = z.object({
  bundle_seq: int,
  source_id: z.string(),
  source_bundle_id: int,
  row_count: int.optional(),
  bundle_hash: z.string().optional(),
  rows: z.array(bundleRowSchema).nullable(),
});
/** Validates a {@link PullResponse}. */
export const pullResponseSchema = z.object({
  stable_bundle_seq: int,
  bundles: z.array(bundleSchema).nullable(),
  has_more: z.boolean(),
});
/** Validates a {@link CommittedBundleRowsResponse}. */
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
/** Validates a {@link SnapshotSession}. */
export const snapshotSessionSchema = z.object({
  snapshot_id: z.string(),
  snapshot_bundle_seq: int,
  row_count: int,
  byte_count: int.optional(),
  expires_at: z.string(),
});
/** Validates a {@link SnapshotRow}. */
export const snapshotRowSchema = z.object({
  schema: z.string(),
  table: z.string(),
  key: syncKeySchema,
  row_version: int,
  payload: z.unknown(),
});
/** Validates a {@link SnapshotChunkResponse}. */
export const snapshotChunkResponseSchema = z.object({
  snapshot_id: z.string(),
  snapshot_bundle_seq: int,
  rows: z.array(snapshotRowSchema).nullable(),
  next_row_ordinal: int,
  has_more: z.boolean(),
});
/** Validates a {@link CapabilitiesResponse}. */
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
/** Validates a {@link BundleChangeEvent}. */
export const bundleChangeEventSchema = z.object({
  bundle_seq: int,
  source_id: z.string().optional(),
  source_bundle_id: int.optional(),
});
