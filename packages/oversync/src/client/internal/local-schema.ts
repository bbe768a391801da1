import type { SqliteDb } from '../writer-types.js';

/** Metadata tables, created IF NOT EXISTS (names and columns kept from go-oversync's oversqlite). */
export const METADATA_DDL = `
CREATE TABLE IF NOT EXISTS _sync_source_state (
  source_id TEXT PRIMARY KEY,
  next_source_bundle_id INTEGER NOT NULL DEFAULT 1,
  replaced_by_source_id TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE IF NOT EXISTS _sync_attachment_state (
  singleton_key INTEGER PRIMARY KEY CHECK (singleton_key = 1),
  current_source_id TEXT NOT NULL DEFAULT '',
  binding_state TEXT NOT NULL DEFAULT 'anonymous',
  attached_user_id TEXT NOT NULL DEFAULT '',
  schema_name TEXT NOT NULL DEFAULT '',
  last_bundle_seq_seen INTEGER NOT NULL DEFAULT 0,
  rebuild_required INTEGER NOT NULL DEFAULT 0,
  pending_initialization_id TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO _sync_attachment_state(singleton_key) VALUES (1);
CREATE TABLE IF NOT EXISTS _sync_operation_state (
  singleton_key INTEGER PRIMARY KEY CHECK (singleton_key = 1),
  kind TEXT NOT NULL DEFAULT 'none',
  target_user_id TEXT NOT NULL DEFAULT '',
  reason TEXT NOT NULL DEFAULT '',
  replacement_source_id TEXT NOT NULL DEFAULT '',
  staged_snapshot_id TEXT NOT NULL DEFAULT '',
  snapshot_bundle_seq INTEGER NOT NULL DEFAULT 0,
  snapshot_row_count INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO _sync_operation_state(singleton_key) VALUES (1);
CREATE TABLE IF NOT EXISTS _sync_apply_state (
  singleton_key INTEGER PRIMARY KEY CHECK (singleton_key = 1),
  apply_mode INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO _sync_apply_state(singleton_key, apply_mode) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS _sync_row_state (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  row_version INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  PRIMARY KEY (schema_name, table_name, key_json)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _sync_dirty_rows (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  op TEXT NOT NULL,
  base_row_version INTEGER NOT NULL DEFAULT 0,
  payload TEXT,
  dirty_ordinal INTEGER NOT NULL,
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  PRIMARY KEY (schema_name, table_name, key_json)
);
CREATE INDEX IF NOT EXISTS _sync_dirty_rows_ordinal_idx ON _sync_dirty_rows(dirty_ordinal);
CREATE TABLE IF NOT EXISTS _sync_snapshot_stage (
  snapshot_id TEXT NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  row_version INTEGER NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (snapshot_id, row_ordinal)
);
CREATE TABLE IF NOT EXISTS _sync_outbox_bundle (
  singleton_key INTEGER PRIMARY KEY CHECK (singleton_key = 1),
  state TEXT NOT NULL DEFAULT 'none',
  source_id TEXT NOT NULL DEFAULT '',
  source_bundle_id INTEGER NOT NULL DEFAULT 0,
  canonical_request_hash TEXT NOT NULL DEFAULT '',
  row_count INTEGER NOT NULL DEFAULT 0,
  initialization_id TEXT NOT NULL DEFAULT '',
  remote_bundle_hash TEXT NOT NULL DEFAULT '',
  remote_bundle_seq INTEGER NOT NULL DEFAULT 0,
  unstructured_conflicts INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO _sync_outbox_bundle(singleton_key) VALUES (1);
CREATE TABLE IF NOT EXISTS _sync_outbox_rows (
  source_bundle_id INTEGER NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  wire_key_json TEXT NOT NULL,
  op TEXT NOT NULL,
  base_row_version INTEGER NOT NULL,
  local_payload TEXT,
  wire_payload TEXT,
  PRIMARY KEY (source_bundle_id, row_ordinal)
);
CREATE INDEX IF NOT EXISTS _sync_outbox_rows_key_idx ON _sync_outbox_rows(table_name, key_json);
CREATE TABLE IF NOT EXISTS _sync_push_stage (
  bundle_seq INTEGER NOT NULL,
  row_ordinal INTEGER NOT NULL,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  op TEXT NOT NULL,
  row_version INTEGER NOT NULL,
  payload TEXT,
  PRIMARY KEY (bundle_seq, row_ordinal)
);
CREATE INDEX IF NOT EXISTS _sync_push_stage_key_idx ON _sync_push_stage(table_name, key_json);
CREATE TABLE IF NOT EXISTS _sync_managed_tables (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS _sync_conflicts (
  conflict_id INTEGER PRIMARY KEY AUTOINCREMENT,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  wire_key_json TEXT NOT NULL,
  reason TEXT NOT NULL,
  local_op TEXT NOT NULL,
  local_payload TEXT,
  base_row_version INTEGER NOT NULL,
  server_row_version INTEGER NOT NULL,
  server_row_deleted INTEGER NOT NULL,
  server_row TEXT,
  resolution TEXT NOT NULL,
  rule TEXT NOT NULL,
  local_lost INTEGER NOT NULL,
  details TEXT NOT NULL DEFAULT '{}',
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE IF NOT EXISTS _sync_orphan_rows (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  payload TEXT NOT NULL,
  stashed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  PRIMARY KEY (schema_name, table_name, key_json)
);
CREATE TABLE IF NOT EXISTS _sync_deleted_parents (
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  key_json TEXT NOT NULL,
  payload TEXT NOT NULL,
  PRIMARY KEY (schema_name, table_name, key_json)
);
`;

export const METADATA_TABLES = [
  '_sync_source_state',
  '_sync_attachment_state',
  '_sync_operation_state',
  '_sync_apply_state',
  '_sync_row_state',
  '_sync_dirty_rows',
  '_sync_snapshot_stage',
  '_sync_outbox_bundle',
  '_sync_outbox_rows',
  '_sync_push_stage',
  '_sync_managed_tables',
  '_sync_conflicts',
  '_sync_orphan_rows',
  '_sync_deleted_parents',
] as const;

/** Older databases made by the reference client lack our extra column: add it. */
export function migrateMetadata(db: SqliteDb): void {
  const cols = db.prepare(`PRAGMA table_info(_sync_outbox_bundle)`).all() as Array<{ name: string }>;
  if (!cols.some((c) => c.name === 'unstructured_conflicts')) {
    db.exec(`ALTER TABLE _sync_outbox_bundle ADD COLUMN unstructured_conflicts INTEGER NOT NULL DEFAULT 0`);
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}
