/**
 * DDL of the `sync` metadata schema, layout `server_postgres_sync_v1` (protocol doc §2), with one
 * deliberate difference: the per-row tables (row_state, bundle_capture_stage, bundle_rows,
 * push_session_rows, snapshot_session_rows) carry no foreign key to sync.table_catalog (their
 * table_id only ever comes from the validated catalog), row_state and bundle_rows have no FK to
 * user_state / bundle_log either (statement-level AFTER DELETE triggers on those take their rows
 * along), the transient capture stage has no FK at all, and the reference's duplicate unique
 * index on snapshot rows is not created. Each avoided check is one trigger query per written row.
 * push_session_rows and snapshot_session_rows have no FK to their session header either: a
 * statement-level AFTER DELETE trigger on the header deletes them instead (same cascade, no
 * per-row check on the 10k-100k rows a session stages). The transient session tables (push_sessions, push_session_rows, snapshot_sessions,
 * snapshot_session_rows) are UNLOGGED: sessions are short-lived, TTL-bound working copies, and
 * skipping the WAL roughly halves the cost of staging and materialising them. A PostgreSQL crash
 * (or a promoted standby) empties header and rows together, so an open session then answers
 * `404 *_session_not_found` and the client starts a new one, as after a TTL expiry; nothing
 * committed (bundle_log, bundle_rows, row_state, business tables) lives in them. Installs made
 * before this keep their logged tables, which behave the same.
 */

import { BACKEND_WRITE_SCOPE_CHANGE_SQLSTATE } from '../backend-writes.js';
import { type Cascade, cascadeSql } from './cascade-sql.js';

/** The snapshot session cascade as fresh installs create it; snapshot-sql.ts adds the block table. */
export const SNAPSHOT_ROWS_CASCADE: Cascade = {
  fn: 'delete_snapshot_session_rows',
  trigger: 'oversync_snapshot_session_rows_cascade',
  parent: 'sync.snapshot_sessions',
  oldRows: 'oversync_old_sessions',
  children: [{ table: 'sync.snapshot_session_rows', key: ['snapshot_id'] }],
};

export const SYNC_LAYOUT_NAME = 'server_postgres_sync_v1';
/** `pg_advisory_xact_lock` key of bootstrap: "oversync" as a big-endian int64. */
export const SYNC_BOOTSTRAP_LOCK_KEY = '8031170061538733667'; // 0x6f76657273796e63
/** Row-level owner guard of UPDATE and DELETE. */
export const OWNER_GUARD_TRIGGER = 'oversync_bundle_owner_guard';
/**
 * Row-level owner guard of INSERT, fired (through its WHEN condition, evaluated without calling
 * PL/pgSQL) only for rows whose scope column is empty or differs from the bundle's user: those it
 * fills in or rejects; a row already carrying the bundle user's scope needs no call.
 */
export const OWNER_GUARD_INSERT_TRIGGER = 'oversync_bundle_owner_guard_insert';
/** Row-level capture of UPDATE and DELETE (an UPDATE that changes the key becomes DELETE + INSERT). */
export const CAPTURE_TRIGGER = 'oversync_bundle_capture_row';
/**
 * Statement-level capture of a backend UPDATE (tables opted in to backend writes only), through
 * its transition tables; the row-level capture of such tables fires only with a bundle context.
 */
export const CAPTURE_BACKEND_UPDATE_TRIGGER = 'oversync_backend_capture_update';
/** Refuses TRUNCATE of a table opted in to backend writes (it fires no row triggers). */
export const BACKEND_TRUNCATE_TRIGGER = 'oversync_backend_truncate_guard';
/** Statement-level capture of a backend DELETE (tables opted in to backend writes only). */
export const CAPTURE_BACKEND_DELETE_TRIGGER = 'oversync_backend_capture_delete';
/**
 * Statement-level capture of INSERT through a transition table: one set-based insert into the
 * capture stage per statement instead of one per row (rows keep the statement's insertion order).
 */
export const CAPTURE_INSERT_TRIGGER = 'oversync_bundle_capture_insert';

/**
 * Transaction-local GUC set by a push commit: `,<table_id>,<table_id>,` of the tables whose INSERT
 * statements the commit captures itself through `RETURNING` (see capture_registered_insert).
 */
export const DIRECT_INSERT_TABLES_GUC = 'oversync.bundle_direct_insert_tables';

/** Trigger argument marking a registered table opted in to backend writes (`backendWrites: true`). */
export const BACKEND_TRIGGER_ARG = 'backend';

export const OP_INSERT = 1;
export const OP_UPDATE = 2;
export const OP_DELETE = 3;
export const KEY_KIND_UUID = 1;
export const KEY_KIND_TEXT = 2;

export const SCOPE_UNINITIALIZED = 0;
export const SCOPE_INITIALIZING = 1;
export const SCOPE_INITIALIZED = 2;

export const CREATE_SYNC_SCHEMA_SQL = `
CREATE SCHEMA IF NOT EXISTS sync;

CREATE TABLE sync.meta (
  singleton_key BOOLEAN PRIMARY KEY CHECK (singleton_key),
  protocol_label TEXT NOT NULL DEFAULT 'v1',
  layout_name TEXT NOT NULL
);

CREATE TABLE sync.table_catalog (
  table_id INTEGER PRIMARY KEY,
  schema_name TEXT NOT NULL,
  table_name TEXT NOT NULL,
  sync_key_column TEXT NOT NULL,
  sync_key_kind SMALLINT NOT NULL,
  CONSTRAINT table_catalog_schema_table_key UNIQUE (schema_name, table_name),
  CONSTRAINT table_catalog_sync_key_kind_chk CHECK (sync_key_kind IN (1, 2))
);

CREATE TABLE sync.user_state (
  user_pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id TEXT NOT NULL UNIQUE,
  next_bundle_seq BIGINT NOT NULL DEFAULT 1,
  retained_bundle_floor BIGINT NOT NULL DEFAULT 0,
  CONSTRAINT user_state_bundle_seq_chk CHECK (next_bundle_seq >= 1),
  CONSTRAINT user_state_retained_floor_chk CHECK (retained_bundle_floor >= 0 AND retained_bundle_floor <= next_bundle_seq - 1)
);

CREATE TABLE sync.scope_state (
  user_pk BIGINT PRIMARY KEY REFERENCES sync.user_state(user_pk) ON DELETE CASCADE,
  state_code SMALLINT NOT NULL,
  initializer_source_id TEXT,
  initialization_id UUID,
  lease_expires_at TIMESTAMPTZ,
  initialized_at TIMESTAMPTZ,
  initialized_by_source_id TEXT,
  CONSTRAINT scope_state_code_chk CHECK (state_code IN (0, 1, 2)),
  CONSTRAINT scope_state_fields_chk CHECK (
    (state_code = 0 AND initializer_source_id IS NULL AND initialization_id IS NULL AND lease_expires_at IS NULL
      AND initialized_at IS NULL AND initialized_by_source_id IS NULL)
    OR (state_code = 1 AND initializer_source_id IS NOT NULL AND initialization_id IS NOT NULL
      AND lease_expires_at IS NOT NULL AND initialized_at IS NULL AND initialized_by_source_id IS NULL)
    OR (state_code = 2 AND initializer_source_id IS NULL AND initialization_id IS NULL AND lease_expires_at IS NULL
      AND initialized_at IS NOT NULL AND initialized_by_source_id IS NOT NULL)
  )
);

CREATE TABLE sync.source_state (
  user_pk BIGINT NOT NULL REFERENCES sync.user_state(user_pk) ON DELETE CASCADE,
  source_id TEXT NOT NULL,
  state TEXT NOT NULL,
  max_committed_source_bundle_id BIGINT NOT NULL DEFAULT 0,
  replaced_by_source_id TEXT NOT NULL DEFAULT '',
  retirement_reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (user_pk, source_id),
  CONSTRAINT source_state_state_chk CHECK (state IN ('active', 'reserved', 'retired')),
  CONSTRAINT source_state_max_committed_chk CHECK (max_committed_source_bundle_id >= 0),
  CONSTRAINT source_state_active_chk CHECK (state <> 'active' OR (replaced_by_source_id = '' AND retirement_reason = '')),
  CONSTRAINT source_state_reserved_chk CHECK (state <> 'reserved' OR (replaced_by_source_id = '' AND retirement_reason = '' AND max_committed_source_bundle_id = 0)),
  CONSTRAINT source_state_retired_chk CHECK (state <> 'retired' OR (replaced_by_source_id <> '' AND retirement_reason <> ''))
);

CREATE TABLE sync.row_state (
  user_pk BIGINT NOT NULL,
  table_id INTEGER NOT NULL,
  key_bytes BYTEA NOT NULL,
  bundle_seq BIGINT NOT NULL,
  deleted BOOLEAN NOT NULL DEFAULT FALSE,
  PRIMARY KEY (user_pk, table_id, key_bytes)
);

CREATE UNLOGGED TABLE sync.bundle_capture_stage (
  capture_ordinal BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  txid BIGINT NOT NULL,
  user_pk BIGINT NOT NULL,
  table_id INTEGER NOT NULL,
  op_code SMALLINT NOT NULL,
  key_bytes BYTEA NOT NULL,
  payload_db JSONB,
  CONSTRAINT bundle_capture_stage_op_chk CHECK (op_code IN (1, 2, 3)),
  CONSTRAINT bundle_capture_stage_payload_chk CHECK ((op_code = 3) = (payload_db IS NULL))
);

CREATE TABLE sync.bundle_log (
  user_pk BIGINT NOT NULL REFERENCES sync.user_state(user_pk) ON DELETE CASCADE,
  bundle_seq BIGINT NOT NULL,
  source_id TEXT NOT NULL,
  source_bundle_id BIGINT NOT NULL,
  row_count BIGINT NOT NULL,
  byte_count BIGINT NOT NULL,
  bundle_hash BYTEA NOT NULL,
  committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (user_pk, bundle_seq),
  CONSTRAINT bundle_log_source_tuple_key UNIQUE (user_pk, source_id, source_bundle_id)
);

CREATE TABLE sync.bundle_rows (
  user_pk BIGINT NOT NULL,
  bundle_seq BIGINT NOT NULL,
  row_ordinal BIGINT NOT NULL,
  table_id INTEGER NOT NULL,
  key_bytes BYTEA NOT NULL,
  op_code SMALLINT NOT NULL,
  payload_wire JSON,
  PRIMARY KEY (user_pk, bundle_seq, row_ordinal),
  CONSTRAINT bundle_rows_op_chk CHECK (op_code IN (1, 2, 3)),
  CONSTRAINT bundle_rows_payload_chk CHECK ((op_code = 3) = (payload_wire IS NULL))
);

CREATE UNLOGGED TABLE sync.push_sessions (
  push_id UUID PRIMARY KEY,
  user_pk BIGINT NOT NULL REFERENCES sync.user_state(user_pk) ON DELETE CASCADE,
  source_id TEXT NOT NULL,
  source_bundle_id BIGINT NOT NULL,
  planned_row_count BIGINT NOT NULL,
  next_expected_row_ordinal BIGINT NOT NULL DEFAULT 0,
  initialization_id UUID,
  expires_at TIMESTAMPTZ NOT NULL,
  CONSTRAINT push_sessions_source_tuple_key UNIQUE (user_pk, source_id, source_bundle_id),
  CONSTRAINT push_sessions_row_count_chk CHECK (planned_row_count > 0 AND next_expected_row_ordinal >= 0
    AND next_expected_row_ordinal <= planned_row_count)
);

CREATE UNLOGGED TABLE sync.push_session_rows (
  push_id UUID NOT NULL,
  row_ordinal BIGINT NOT NULL,
  table_id INTEGER NOT NULL,
  key_bytes BYTEA NOT NULL,
  op_code SMALLINT NOT NULL,
  base_bundle_seq BIGINT NOT NULL,
  payload_apply JSON,
  PRIMARY KEY (push_id, row_ordinal),
  CONSTRAINT push_session_rows_op_chk CHECK (op_code IN (1, 2, 3)),
  CONSTRAINT push_session_rows_payload_chk CHECK ((op_code = 3) = (payload_apply IS NULL))
);

CREATE UNLOGGED TABLE sync.snapshot_sessions (
  snapshot_id UUID PRIMARY KEY,
  user_pk BIGINT NOT NULL REFERENCES sync.user_state(user_pk) ON DELETE CASCADE,
  snapshot_bundle_seq BIGINT NOT NULL,
  row_count BIGINT NOT NULL DEFAULT 0,
  byte_count BIGINT NOT NULL DEFAULT 0,
  expires_at TIMESTAMPTZ NOT NULL
);

CREATE UNLOGGED TABLE sync.snapshot_session_rows (
  snapshot_id UUID NOT NULL,
  row_ordinal BIGINT NOT NULL,
  table_id INTEGER NOT NULL,
  key_bytes BYTEA NOT NULL,
  bundle_seq BIGINT NOT NULL,
  payload_wire JSON NOT NULL,
  PRIMARY KEY (snapshot_id, row_ordinal),
  CONSTRAINT snapshot_session_rows_logical_row_key UNIQUE (snapshot_id, table_id, key_bytes)
);

CREATE SEQUENCE sync.accepted_push_replay_seq;
CREATE SEQUENCE sync.rejected_registered_write_seq;
CREATE SEQUENCE sync.history_pruned_error_seq;

CREATE INDEX bcs_tx_user_ordinal_idx ON sync.bundle_capture_stage (txid, user_pk, capture_ordinal);
CREATE INDEX rs_user_live_snapshot_idx ON sync.row_state (user_pk, table_id, key_bytes) WHERE deleted = FALSE;
CREATE INDEX ps_expires_at_idx ON sync.push_sessions (expires_at);
CREATE INDEX ss_expires_at_idx ON sync.snapshot_sessions (expires_at);
-- ssr_snapshot_table_key_idx of the reference duplicates snapshot_session_rows_logical_row_key; not created.

-- Session rows have no FK to their header (a per-row RI check costs as much as the row's own
-- insert); deleting headers, directly or by the user_state cascade, deletes their rows through
-- these statement-level triggers. Rows are only ever inserted next to their header, in its transaction.
${cascadeSql({
  fn: 'delete_push_session_rows',
  trigger: 'oversync_push_session_rows_cascade',
  parent: 'sync.push_sessions',
  oldRows: 'oversync_old_sessions',
  children: [{ table: 'sync.push_session_rows', key: ['push_id'] }],
})}${cascadeSql(SNAPSHOT_ROWS_CASCADE)}

-- row_state and bundle_rows have no FK either (to user_state / bundle_log): their rows are only
-- written by bundle finalisation, in the transaction that holds the user's row lock and has just
-- inserted the bundle_log row, so the per-row RI check (a third of each insert's cost) proves
-- nothing. Deleting a user or pruning bundles still takes the rows along, through these triggers.
${cascadeSql({
  fn: 'delete_bundle_rows_of_bundles',
  trigger: 'oversync_bundle_rows_cascade',
  parent: 'sync.bundle_log',
  oldRows: 'oversync_old_bundles',
  children: [{ table: 'sync.bundle_rows', key: ['user_pk', 'bundle_seq'] }],
})}${cascadeSql({
  fn: 'delete_row_state_of_users',
  trigger: 'oversync_row_state_cascade',
  parent: 'sync.user_state',
  oldRows: 'oversync_old_users',
  children: [{ table: 'sync.row_state', key: ['user_pk'] }],
})}

INSERT INTO sync.meta (singleton_key, protocol_label, layout_name) VALUES (TRUE, 'v1', '${SYNC_LAYOUT_NAME}');
`;

/** Trigger functions; CREATE OR REPLACE so every bootstrap installs the current version. */
export const TRIGGER_FUNCTIONS_SQL = `
CREATE OR REPLACE FUNCTION sync.enforce_registered_row_owner() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  bundle_user TEXT := current_setting('oversync.bundle_user_id', true);
BEGIN
  IF bundle_user IS NULL OR bundle_user = '' THEN
    -- A backend write (table opted in, TG_ARGV[0] = 'backend'): attribute the row to its scope
    -- before the row is written (see backend-writes-sql.ts); the cached scope costs no call.
    IF TG_ARGV[0] = '${BACKEND_TRIGGER_ARG}' THEN
      IF TG_OP = 'INSERT' THEN
        IF coalesce(NEW._sync_scope_id, '') = ''
           OR NEW._sync_scope_id IS DISTINCT FROM current_setting('oversync.backend_scope_id', true) THEN
          PERFORM sync.backend_write_scope(NEW._sync_scope_id, TG_TABLE_SCHEMA, TG_TABLE_NAME);
        END IF;
        RETURN NEW;
      END IF;
      IF TG_OP = 'UPDATE' AND NEW._sync_scope_id IS DISTINCT FROM OLD._sync_scope_id THEN
        PERFORM nextval('sync.rejected_registered_write_seq');
        RAISE EXCEPTION 'oversync: backend write may not change _sync_scope_id on registered table %.%',
          quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
          USING ERRCODE = '${BACKEND_WRITE_SCOPE_CHANGE_SQLSTATE}',
                HINT = 'delete the row from the old scope and insert it into the new one';
      END IF;
      IF coalesce(OLD._sync_scope_id, '') = ''
         OR OLD._sync_scope_id IS DISTINCT FROM current_setting('oversync.backend_scope_id', true) THEN
        PERFORM sync.backend_write_scope(OLD._sync_scope_id, TG_TABLE_SCHEMA, TG_TABLE_NAME);
      END IF;
      IF TG_OP = 'DELETE' THEN
        RETURN OLD;
      END IF;
      RETURN NEW;
    END IF;
    PERFORM nextval('sync.rejected_registered_write_seq');
    RAISE EXCEPTION 'write to registered table %.% requires oversync sync bundle context',
      quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME) USING ERRCODE = 'P0001';
  END IF;
  IF TG_OP = 'INSERT' THEN
    IF NEW._sync_scope_id IS NULL OR NEW._sync_scope_id = '' THEN
      NEW._sync_scope_id := bundle_user;
    ELSIF NEW._sync_scope_id <> bundle_user THEN
      RAISE EXCEPTION 'scope mismatch on registered table %.%: actor % cannot write owner %',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), bundle_user, NEW._sync_scope_id USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
  ELSIF TG_OP = 'UPDATE' THEN
    IF OLD._sync_scope_id IS DISTINCT FROM bundle_user THEN
      RAISE EXCEPTION 'scope mismatch on registered table %.%: actor % cannot update owner %',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), bundle_user, OLD._sync_scope_id USING ERRCODE = 'P0001';
    END IF;
    IF NEW._sync_scope_id IS DISTINCT FROM OLD._sync_scope_id THEN
      RAISE EXCEPTION 'scope mutation is not allowed on registered table %.%',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME) USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
  ELSE
    IF OLD._sync_scope_id IS DISTINCT FROM bundle_user THEN
      RAISE EXCEPTION 'scope mismatch on registered table %.%: actor % cannot delete owner %',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME), bundle_user, OLD._sync_scope_id USING ERRCODE = 'P0001';
    END IF;
    RETURN OLD;
  END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION sync.capture_registered_row_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  bundle_user TEXT := current_setting('oversync.bundle_user_id', true);
  bundle_pk_text TEXT := current_setting('oversync.bundle_user_pk', true);
  key_column TEXT := TG_ARGV[0];
  key_kind INTEGER := TG_ARGV[1]::INTEGER;
  tbl_id INTEGER := TG_ARGV[2]::INTEGER;
  bundle_pk BIGINT;
  tx BIGINT := txid_current();
  new_doc JSONB;
  old_doc JSONB;
  new_key BYTEA;
  old_key BYTEA;
BEGIN
  -- Tables opted in to backend writes fire this only with a bundle context (the trigger's WHEN);
  -- their backend UPDATEs and DELETEs are staged per statement by sync.capture_backend_change.
  IF bundle_user IS NULL OR bundle_user = '' THEN
    PERFORM nextval('sync.rejected_registered_write_seq');
    RAISE EXCEPTION 'write to registered table %.% requires oversync sync bundle context',
      quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME) USING ERRCODE = 'P0001';
  END IF;
  IF bundle_pk_text IS NULL OR bundle_pk_text = '' THEN
    RAISE EXCEPTION 'oversync sync bundle context is missing user_pk' USING ERRCODE = 'P0001';
  END IF;
  bundle_pk := bundle_pk_text::BIGINT;

  IF TG_OP <> 'INSERT' THEN
    old_doc := to_jsonb(OLD);
    IF old_doc->>'_sync_scope_id' IS DISTINCT FROM bundle_user THEN
      RAISE EXCEPTION 'scope mismatch on registered table %.%', quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
        USING ERRCODE = 'P0001';
    END IF;
    old_key := CASE WHEN key_kind = 1 THEN uuid_send((old_doc->>key_column)::uuid)
                    ELSE convert_to(old_doc->>key_column, 'UTF8') END;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_doc := to_jsonb(NEW);
    IF new_doc->>'_sync_scope_id' IS DISTINCT FROM bundle_user THEN
      RAISE EXCEPTION 'scope mismatch on registered table %.%', quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
        USING ERRCODE = 'P0001';
    END IF;
    new_key := CASE WHEN key_kind = 1 THEN uuid_send((new_doc->>key_column)::uuid)
                    ELSE convert_to(new_doc->>key_column, 'UTF8') END;
    new_doc := new_doc - '_sync_scope_id';
  END IF;

  IF TG_OP = 'DELETE' THEN
    INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
    VALUES (tx, bundle_pk, tbl_id, 3, old_key, NULL);
  ELSIF TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key THEN
    INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
    VALUES (tx, bundle_pk, tbl_id, 3, old_key, NULL), (tx, bundle_pk, tbl_id, 1, new_key, new_doc);
  ELSE
    INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
    VALUES (tx, bundle_pk, tbl_id, CASE WHEN TG_OP = 'INSERT' THEN 1 ELSE 2 END, new_key, new_doc);
  END IF;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION sync.capture_registered_insert() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  bundle_user TEXT := current_setting('oversync.bundle_user_id', true);
  bundle_pk_text TEXT := current_setting('oversync.bundle_user_pk', true);
  key_column TEXT := TG_ARGV[0];
  key_kind INTEGER := TG_ARGV[1]::INTEGER;
  tbl_id INTEGER := TG_ARGV[2]::INTEGER;
BEGIN
  -- A push commit's own INSERT into a table listed here records its rows itself (RETURNING), so
  -- the statement fired directly by it (depth 1) is not staged a second time. Nested statements
  -- (depth > 1) and every other transaction are captured as always.
  IF pg_trigger_depth() = 1 AND position(',' || tbl_id || ',' IN
       coalesce(current_setting('${DIRECT_INSERT_TABLES_GUC}', true), '')) > 0 THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM oversync_new_rows) THEN
    RETURN NULL;
  END IF;
  IF bundle_user IS NULL OR bundle_user = '' THEN
    IF TG_ARGV[3] IS DISTINCT FROM '${BACKEND_TRIGGER_ARG}' THEN
      PERFORM nextval('sync.rejected_registered_write_seq');
      RAISE EXCEPTION 'write to registered table %.% requires oversync sync bundle context',
        quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME) USING ERRCODE = 'P0001';
    END IF;
    -- Backend write: the owner guard attributed every row to an initialized scope (and locked it),
    -- so each row's user_pk is one index lookup; rows keep the statement's order.
    INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
    SELECT txid_current(), (SELECT u.user_pk FROM sync.user_state u WHERE u.user_id = d.doc->>'_sync_scope_id'), tbl_id, 1,
           CASE WHEN key_kind = 1 THEN uuid_send((d.doc->>key_column)::uuid)
                ELSE convert_to(d.doc->>key_column, 'UTF8') END,
           d.doc - '_sync_scope_id'
      FROM (SELECT to_jsonb(n.*) AS doc FROM oversync_new_rows n) AS d;
    RETURN NULL;
  END IF;
  IF bundle_pk_text IS NULL OR bundle_pk_text = '' THEN
    RAISE EXCEPTION 'oversync sync bundle context is missing user_pk' USING ERRCODE = 'P0001';
  END IF;
  IF EXISTS (SELECT 1 FROM oversync_new_rows n WHERE n._sync_scope_id IS DISTINCT FROM bundle_user) THEN
    RAISE EXCEPTION 'scope mismatch on registered table %.%', quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
      USING ERRCODE = 'P0001';
  END IF;
  INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
  SELECT txid_current(), bundle_pk_text::BIGINT, tbl_id, 1,
         CASE WHEN key_kind = 1 THEN uuid_send((d.doc->>key_column)::uuid)
              ELSE convert_to(d.doc->>key_column, 'UTF8') END,
         d.doc - '_sync_scope_id'
    FROM (SELECT to_jsonb(n.*) AS doc FROM oversync_new_rows n) AS d; -- n.*: a column may be named n
  RETURN NULL;
END
$fn$;
`;
