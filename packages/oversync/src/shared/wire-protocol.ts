/** go-oversync protocol v1: its version, the source header, row ops, keys, connect outcomes, error codes. */

export const SYNC_PROTOCOL_VERSION = 'v1';
/** Request header carrying the device's sync source id (the only source of truth for it). */
export const SOURCE_ID_HEADER = 'Oversync-Source-ID';

/** The operation of a row change, as bundles and push rows carry it. */
export type WireOp = 'INSERT' | 'UPDATE' | 'DELETE';
/** Every {@link WireOp}, in that order. */
export const WIRE_OPS: readonly WireOp[] = ['INSERT', 'UPDATE', 'DELETE'];

/** `{<sync_key_column>: <string>}`; uuid keys are canonical dashed lowercase. */
export type SyncKey = Record<string, unknown>;

/**
 * What `POST /sync/connect` tells a device to do with its scope: take the server's state, upload its
 * local rows as the scope's first state, start empty, or ask again later (another device is initializing).
 */
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
  'push_failed',
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
/** One of {@link WIRE_ERROR_CODES}: the `error` field of a v1 error body. */
export type WireErrorCode = (typeof WIRE_ERROR_CODES)[number];
