/**
 * Backend writes that sync (opt-in per registered table, `backendWrites: true`): an ordinary
 * transaction from any SQL client that writes registered rows without a bundle context becomes one
 * committed bundle per affected scope at COMMIT.
 *
 * - The owner guard (BEFORE ROW) attributes each written row to the scope named by its
 *   `_sync_scope_id` through `sync.backend_write_scope`: the scope must be non-empty and INITIALIZED,
 *   or the write is refused with SQLSTATE `OV001`. The first row of a scope in a transaction takes
 *   the user's lock (the same `pg_advisory_xact_lock(hashtextextended(user_id, 0))` a push, a
 *   connect and a server-originated write take, before any business row lock, so backend
 *   transactions and pushes of one user serialise instead of deadlocking) and records the
 *   (txid, user_pk) in `sync.backend_bundle_pending`; the scope is cached in transaction-local GUCs
 *   so the following rows of the same scope cost one `current_setting`.
 * - The capture triggers stage the rows in `sync.bundle_capture_stage` under that user_pk, exactly
 *   as for a bundle with context.
 * - `sync.backend_bundle_pending` carries a DEFERRABLE INITIALLY DEFERRED constraint trigger: at
 *   COMMIT it fires once per pending (txid, scope) and `sync.finalize_captured_bundle` turns the
 *   staged rows into one bundle (normalised rows, bundle_seq, Go-canonical payloads and bundle hash,
 *   bundle_log, bundle_rows, row_state, NOTIFY), then the source state of `BACKEND_WRITE_SOURCE_ID`
 *   and retention move as after any committed bundle.
 *
 * The canonical JSON functions reproduce `shared/canonical-json.ts` (Go's `json.Marshal` of a value
 * decoded into `any`) for the values `to_jsonb(row)` yields: keys in code point order (`COLLATE "C"`
 * compares UTF-8 bytes), numbers through float8 printed shortest (`extra_float_digits = 1`, set on
 * the finalize function) in JS/Go notation, strings with Go's HTML escapes.
 */

import {
  BACKEND_WRITE_SOURCE_ID,
  BACKEND_WRITE_TRUNCATE_SQLSTATE,
  BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE,
} from '../backend-writes.js';

/** The deferred constraint trigger on `sync.backend_bundle_pending` that finalises at COMMIT. */
export const BACKEND_COMMIT_TRIGGER = 'oversync_backend_bundle_commit';

/** Settings baked into the commit trigger's arguments by each bootstrap (the last one wins). */
export interface BackendWriteSettings {
  /** NOTIFY channel of committed bundles, or undefined when the watch is off. */
  readonly notifyChannel: string | undefined;
  readonly retainedBundlesPerUser: number;
  readonly retentionPruneBatchSize: number;
}

/** Canonical JSON (Go rules) in SQL; shared by every finalisation that runs in the database. */
const CANONICAL_JSON_SQL = `
CREATE OR REPLACE FUNCTION sync.go_json_escape(json_text TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT replace(replace(replace(replace(replace(json_text,
    '<', '\\u003c'), '>', '\\u003e'), '&', '\\u0026'), chr(8232), '\\u2028'), chr(8233), '\\u2029')
$fn$;

CREATE OR REPLACE FUNCTION sync.go_json_string(s TEXT) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
  SELECT sync.go_json_escape(to_json(s)::text)
$fn$;

CREATE OR REPLACE FUNCTION sync.go_json_number(n NUMERIC) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
  SELECT CASE
    WHEN n = 0 THEN '0'
    WHEN abs(n::float8) >= 1e-6 AND abs(n::float8) < 1e21 THEN (n::float8::text)::numeric::text
    ELSE regexp_replace(n::float8::text, 'e([+-])0*', 'e\\1') END
$fn$;

CREATE OR REPLACE FUNCTION sync.go_canonical_json(j JSONB) RETURNS TEXT
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $fn$
BEGIN
  IF jsonb_typeof(j) = 'object' THEN
    RETURN '{' || coalesce((SELECT string_agg(sync.go_json_string(e.key) || ':' || sync.go_json_value(e.value), ','
                                              ORDER BY e.key COLLATE "C") FROM jsonb_each(j) AS e), '') || '}';
  ELSIF jsonb_typeof(j) = 'array' THEN
    RETURN '[' || coalesce((SELECT string_agg(sync.go_json_value(e.value), ',' ORDER BY e.ord)
                              FROM jsonb_array_elements(j) WITH ORDINALITY AS e(value, ord)), '') || ']';
  END IF;
  RETURN sync.go_json_value(j);
END
$fn$;

CREATE OR REPLACE FUNCTION sync.go_json_value(v JSONB) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $fn$
  -- jsonb prints a string escaped exactly as to_json(text) does; integers of up to 15 digits are
  -- already in float64 shortest form.
  SELECT CASE jsonb_typeof(v)
    WHEN 'string' THEN sync.go_json_escape(v::text)
    WHEN 'number' THEN CASE WHEN v::text ~ '^-?(0|[1-9][0-9]{0,14})$' THEN v::text
                            ELSE sync.go_json_number(v::text::numeric) END
    WHEN 'boolean' THEN v::text
    WHEN 'null' THEN 'null'
    ELSE sync.go_canonical_json(v) END
$fn$;
`;

/**
 * `sync.finalize_captured_bundle`: the staged rows of (current txid, user) → one committed bundle;
 * returns its bundle_seq, or NULL when no business-table effect remains (then nothing is written
 * and no bundle_seq is consumed). The caller holds the user's lock. A NULL source_bundle_id means
 * "the bundle_seq". Same normalisation as capture.ts: per key, first and last event in capture
 * order; INSERT…DELETE vanishes, …DELETE is DELETE, INSERT… is INSERT, anything else UPDATE;
 * rows ordered by their key's first capture.
 */
const FINALIZE_SQL = `
CREATE OR REPLACE FUNCTION sync.finalize_captured_bundle(
  p_user_pk BIGINT, p_source_id TEXT, p_source_bundle_id BIGINT, p_notify_channel TEXT) RETURNS BIGINT
LANGUAGE plpgsql SET extra_float_digits = 1 AS $fn$
DECLARE
  tx BIGINT := txid_current();
  seq BIGINT;
BEGIN
  WITH cat AS MATERIALIZED (
    SELECT tc.table_id, tc.sync_key_kind,
           array(SELECT a.attname::text FROM pg_attribute a
                  WHERE a.attrelid = (quote_ident(tc.schema_name) || '.' || quote_ident(tc.table_name))::regclass
                    AND a.atttypid = 'bytea'::regtype AND a.attnum > 0 AND NOT a.attisdropped) AS bytea_cols,
           '{' || sync.go_json_string(tc.sync_key_column) || ':' AS key_json,
           ',"schema":' || sync.go_json_string(tc.schema_name) || ',"table":' || sync.go_json_string(tc.table_name) || '}' AS tail
      FROM sync.table_catalog tc),
  g AS (
    SELECT table_id, key_bytes, min(capture_ordinal) AS first_ord,
           (array_agg(op_code ORDER BY capture_ordinal))[1] AS first_op,
           (array_agg(op_code ORDER BY capture_ordinal DESC))[1] AS last_op,
           (array_agg(payload_db ORDER BY capture_ordinal DESC))[1] AS last_payload
      FROM sync.bundle_capture_stage WHERE txid = tx AND user_pk = p_user_pk
     GROUP BY table_id, key_bytes),
  -- Column names of registered tables are [a-z0-9_] (bootstrap checks), so their JSON is '"name"'.
  norm AS MATERIALIZED (
    SELECT row_number() OVER (ORDER BY g.first_ord) AS ord, g.table_id, g.key_bytes,
           CASE WHEN g.last_op = 3 THEN 3 WHEN g.first_op = 1 THEN 1 ELSE 2 END::int2 AS op_code,
           CASE WHEN g.last_op = 3 THEN NULL ELSE
             '{' || (SELECT string_agg('"' || e.key || '":' ||
                       CASE WHEN e.key = ANY(c.bytea_cols) AND jsonb_typeof(e.value) = 'string'
                                 AND left(e.value #>> '{}', 2) = '\\x'
                            THEN '"' || translate(encode(decode(substr(e.value #>> '{}', 3), 'hex'), 'base64'), E'\\n', '') || '"'
                            ELSE sync.go_json_value(e.value) END, ',' ORDER BY e.key COLLATE "C")
                       FROM jsonb_each(g.last_payload) AS e) || '}' END AS payload,
           c.sync_key_kind, c.key_json, c.tail
      FROM g JOIN cat c ON c.table_id = g.table_id
     WHERE NOT (g.last_op = 3 AND g.first_op = 1)),
  alloc AS (
    UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1
     WHERE user_pk = p_user_pk AND EXISTS (SELECT 1 FROM norm)
     RETURNING next_bundle_seq - 1 AS seq),
  hashed AS (
    SELECT count(*) AS n, convert_to('[' || string_agg(
             '{"key":' || n.key_json || CASE WHEN n.sync_key_kind = 1
               THEN '"' || encode(n.key_bytes, 'hex')::uuid::text || '"'
               ELSE sync.go_json_string(convert_from(n.key_bytes, 'UTF8')) END ||
             '},"op":' || CASE n.op_code WHEN 1 THEN '"INSERT"' WHEN 2 THEN '"UPDATE"' ELSE '"DELETE"' END ||
             ',"payload":' || coalesce(n.payload, 'null') || ',"row_ordinal":' || (n.ord - 1) ||
             ',"row_version":' || a.seq || n.tail, ',' ORDER BY n.ord) || ']', 'UTF8') AS input
      FROM norm n CROSS JOIN alloc a),
  log AS (
    INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
    SELECT p_user_pk, a.seq, p_source_id, coalesce(p_source_bundle_id, a.seq), h.n, octet_length(h.input), sha256(h.input)
      FROM alloc a CROSS JOIN hashed h),
  brows AS (
    INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
    SELECT p_user_pk, a.seq, n.ord, n.table_id, n.key_bytes, n.op_code, n.payload::json
      FROM norm n CROSS JOIN alloc a),
  rstate AS (
    INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
    SELECT p_user_pk, n.table_id, n.key_bytes, a.seq, n.op_code = 3 FROM norm n CROSS JOIN alloc a
    ON CONFLICT (user_pk, table_id, key_bytes)
    DO UPDATE SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted)
  SELECT a.seq INTO seq FROM alloc a;

  DELETE FROM sync.bundle_capture_stage WHERE txid = tx AND user_pk = p_user_pk;
  IF seq IS NOT NULL AND coalesce(p_notify_channel, '') <> '' THEN
    -- The payload text notifyBundle (capture.ts) sends: JSON.stringify of the same four fields.
    PERFORM pg_notify(p_notify_channel, '{"user_pk":' || p_user_pk || ',"bundle_seq":' || seq ||
      ',"source_id":' || to_json(p_source_id)::text || ',"source_bundle_id":' || coalesce(p_source_bundle_id, seq) || '}');
  END IF;
  RETURN seq;
END
$fn$;
`;

const BACKEND_SQL = `
CREATE UNLOGGED TABLE IF NOT EXISTS sync.backend_bundle_pending (
  txid BIGINT NOT NULL,
  user_pk BIGINT NOT NULL,
  PRIMARY KEY (txid, user_pk)
);

CREATE OR REPLACE FUNCTION sync.backend_write_scope(p_scope TEXT, p_schema TEXT, p_table TEXT) RETURNS BIGINT
LANGUAGE plpgsql AS $fn$
DECLARE
  pk BIGINT;
  st SMALLINT;
BEGIN
  IF p_scope <> '' AND p_scope = current_setting('oversync.backend_scope_id', true) THEN
    RETURN current_setting('oversync.backend_scope_pk')::BIGINT;
  END IF;
  IF p_scope IS NULL OR p_scope = '' THEN
    PERFORM nextval('sync.rejected_registered_write_seq');
    RAISE EXCEPTION 'oversync: backend write to registered table %.% cannot be attributed to a scope',
      quote_ident(p_schema), quote_ident(p_table)
      USING ERRCODE = '${BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE}', DETAIL = '_sync_scope_id is NULL or empty',
            HINT = 'set _sync_scope_id to the user id whose devices receive the row';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended(p_scope, 0));
  SELECT u.user_pk, s.state_code INTO pk, st
    FROM sync.user_state u JOIN sync.scope_state s ON s.user_pk = u.user_pk WHERE u.user_id = p_scope;
  IF pk IS NULL OR st <> 2 THEN
    PERFORM nextval('sync.rejected_registered_write_seq');
    RAISE EXCEPTION 'oversync: backend write to registered table %.% cannot be attributed to a scope',
      quote_ident(p_schema), quote_ident(p_table)
      USING ERRCODE = '${BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE}',
            DETAIL = format('scope %s is not initialized (%s)', p_scope,
                            CASE WHEN pk IS NULL THEN 'no sync state' WHEN st = 1 THEN 'initializing' ELSE 'uninitialized' END),
            HINT = 'a scope is initialized by its first device connect or by scopeManager().execWrite';
  END IF;
  INSERT INTO sync.backend_bundle_pending (txid, user_pk) VALUES (txid_current(), pk) ON CONFLICT DO NOTHING;
  PERFORM set_config('oversync.backend_scope_id', p_scope, true),
          set_config('oversync.backend_scope_pk', pk::text, true);
  RETURN pk;
END
$fn$;

-- Backend UPDATE / DELETE of an opted-in table, per statement through its transition tables (the
-- owner guard already attributed and locked every row's scope). An UPDATE pairs old and new rows
-- by (scope, key): a key only in the old rows was deleted, one only in the new rows inserted.
-- Arguments as the row-level capture's: key column, key kind, table id.
CREATE OR REPLACE FUNCTION sync.capture_backend_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  key_column TEXT := TG_ARGV[0];
  key_of TEXT := CASE WHEN TG_ARGV[1] = '1' THEN 'uuid_send(%1$s.%2$I)' ELSE 'convert_to(%1$s.%2$I, ''UTF8'')' END;
BEGIN
  IF coalesce(current_setting('oversync.bundle_user_id', true), '') <> '' THEN
    RETURN NULL; -- a bundle with context: the row-level capture staged the rows
  END IF;
  IF TG_OP = 'DELETE' THEN
    EXECUTE format($q$
      INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
      SELECT txid_current(), u.user_pk, $1, 3, %s, NULL
        FROM oversync_old_rows o JOIN sync.user_state u ON u.user_id = o._sync_scope_id$q$,
      format(key_of, 'o', key_column)) USING TG_ARGV[2]::INTEGER;
  ELSE
    EXECUTE format($q$
      INSERT INTO sync.bundle_capture_stage (txid, user_pk, table_id, op_code, key_bytes, payload_db)
      SELECT txid_current(), u.user_pk, $1, x.op_code, x.key_bytes, x.doc
        FROM (SELECT o._sync_scope_id AS scope, 3::int2 AS op_code, %1$s AS key_bytes, NULL::jsonb AS doc
                FROM oversync_old_rows o LEFT JOIN oversync_new_rows n
                  ON n._sync_scope_id = o._sync_scope_id AND n.%3$I = o.%3$I
               WHERE n._sync_scope_id IS NULL
              UNION ALL
              SELECT n._sync_scope_id, CASE WHEN o._sync_scope_id IS NULL THEN 1 ELSE 2 END::int2, %2$s,
                     to_jsonb(n.*) - '_sync_scope_id'
                FROM oversync_new_rows n LEFT JOIN oversync_old_rows o
                  ON o._sync_scope_id = n._sync_scope_id AND o.%3$I = n.%3$I) AS x
        JOIN sync.user_state u ON u.user_id = x.scope$q$,
      format(key_of, 'o', key_column), format(key_of, 'n', key_column), key_column) USING TG_ARGV[2]::INTEGER;
  END IF;
  RETURN NULL;
END
$fn$;

-- TRUNCATE fires no row triggers: on an opted-in table it would leave the devices behind.
CREATE OR REPLACE FUNCTION sync.refuse_backend_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM nextval('sync.rejected_registered_write_seq');
  RAISE EXCEPTION 'oversync: TRUNCATE of registered table %.% cannot be synced',
    quote_ident(TG_TABLE_SCHEMA), quote_ident(TG_TABLE_NAME)
    USING ERRCODE = '${BACKEND_WRITE_TRUNCATE_SQLSTATE}', HINT = 'DELETE the rows instead';
END
$fn$;

-- Fires at COMMIT (or at SET CONSTRAINTS … IMMEDIATE) once per (txid, scope) with backend writes.
-- Arguments: notify channel ('' = none), retainedBundlesPerUser, retentionPruneBatchSize.
CREATE OR REPLACE FUNCTION sync.commit_backend_bundle() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  seq BIGINT;
  floor_seq BIGINT;
BEGIN
  seq := sync.finalize_captured_bundle(NEW.user_pk, '${BACKEND_WRITE_SOURCE_ID}', NULL, TG_ARGV[0]);
  DELETE FROM sync.backend_bundle_pending WHERE txid = NEW.txid AND user_pk = NEW.user_pk;
  -- Later writes of this transaction (after SET CONSTRAINTS … IMMEDIATE) register anew.
  PERFORM set_config('oversync.backend_scope_id', '', true);
  IF seq IS NULL THEN
    RETURN NULL;
  END IF;
  INSERT INTO sync.source_state (user_pk, source_id, state, max_committed_source_bundle_id)
  VALUES (NEW.user_pk, '${BACKEND_WRITE_SOURCE_ID}', 'active', seq)
  ON CONFLICT (user_pk, source_id) DO UPDATE SET state = 'active',
    max_committed_source_bundle_id = EXCLUDED.max_committed_source_bundle_id,
    replaced_by_source_id = '', retirement_reason = '';
  UPDATE sync.user_state
     SET retained_bundle_floor = least(next_bundle_seq - 1 - TG_ARGV[1]::bigint,
                                       retained_bundle_floor + TG_ARGV[2]::bigint)
   WHERE user_pk = NEW.user_pk AND next_bundle_seq - 1 - TG_ARGV[1]::bigint > retained_bundle_floor
   RETURNING retained_bundle_floor INTO floor_seq;
  IF floor_seq IS NOT NULL THEN
    DELETE FROM sync.bundle_log WHERE user_pk = NEW.user_pk AND bundle_seq <= floor_seq;
  END IF;
  RETURN NULL;
END
$fn$;
`;

/** Everything bootstrap installs for backend writes (idempotent: CREATE OR REPLACE / IF NOT EXISTS). */
export const BACKEND_WRITES_SQL = CANONICAL_JSON_SQL + FINALIZE_SQL + BACKEND_SQL;

/** The commit trigger, recreated by every bootstrap with the service's current settings. */
export function backendCommitTriggerSql(
  s: BackendWriteSettings,
  quoteLiteral: (v: string) => string,
): string {
  const args = [s.notifyChannel ?? '', String(s.retainedBundlesPerUser), String(s.retentionPruneBatchSize)]
    .map(quoteLiteral)
    .join(', ');
  return `
DROP TRIGGER IF EXISTS ${BACKEND_COMMIT_TRIGGER} ON sync.backend_bundle_pending;
CREATE CONSTRAINT TRIGGER ${BACKEND_COMMIT_TRIGGER} AFTER INSERT ON sync.backend_bundle_pending
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sync.commit_backend_bundle(${args});
`;
}
