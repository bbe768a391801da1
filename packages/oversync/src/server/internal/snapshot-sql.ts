/**
 * Storage of frozen snapshot sessions (§6): finished wire rows in blocks.
 *
 * A snapshot session is materialised once and then read page by page. Instead of one table row per
 * snapshot row (the reference's `snapshot_session_rows`: 100k heap tuples, two btree indexes and a
 * JSON re-parse per row, then a JSON envelope built again for every page), rows are stored as the
 * exact JSON text the chunk response carries (`{"schema":…,"table":…,"key":…,"row_version":…,
 * "payload":…}`), `SNAPSHOT_BLOCK_ROWS` to a block, in one `text[]` per block. A page is then a slice
 * of one or a few arrays joined with commas. The arrays are stored out of line without compression
 * (`STORAGE EXTERNAL`): pglz costs more CPU than the bytes it saves on this short-lived data.
 *
 * Blocks are keyed by the ordinal of their first row; ordinals are contiguous from 1 over the whole
 * session (table_id order, key bytes order within a table), and a block never spans two tables.
 * Like the other session tables the block table is UNLOGGED and has no FK to its header: the
 * statement-level cascade trigger on `sync.snapshot_sessions` deletes a session's blocks.
 *
 * A large session is written in the background after its create answered (see snapshot.ts): its
 * `sync.snapshot_session_builds` row says whether the build still runs (`building`, its process
 * holding the advisory lock (BUILD_LOCK_CLASS, lock_key) for as long), finished (`done`) or
 * failed (`failed`, with `failure` `mismatch` or `error`). A session without one was written before
 * its create answered.
 *
 * `sync.snapshot_session_rows` stays in the layout for installs that have it, unused; the cascade
 * trigger function below still clears it.
 */

import { cascadeSql } from './cascade-sql.js';
import { SNAPSHOT_ROWS_CASCADE } from './schema-sql.js';

/** Rows per block: a 100-row page reads at most two blocks of ~40 KB; a 5,000-row page ~21 blocks. */
export const SNAPSHOT_BLOCK_ROWS = 256;

/** classid of the two-key advisory lock a background snapshot build holds ("OS"). */
export const BUILD_LOCK_CLASS = 0x4f53;

/** SQLSTATE raised by `sync.snapshot_row_mismatch()`: a live row_state entry without its business row or the reverse. */
export const SNAPSHOT_MISMATCH_SQLSTATE = 'OS001';

/**
 * Idempotent DDL run by every bootstrap (inside its transaction, under the bootstrap lock): creates
 * the block table on a new or older install and installs the current cascade function.
 */
export const SNAPSHOT_STORAGE_SQL = `
DO $do$
BEGIN
  IF to_regclass('sync.snapshot_session_blocks') IS NULL THEN
    CREATE UNLOGGED TABLE sync.snapshot_session_blocks (
      snapshot_id UUID NOT NULL,
      first_ordinal BIGINT NOT NULL,
      row_count INTEGER NOT NULL,
      payload_bytes BIGINT NOT NULL,
      rows TEXT[] NOT NULL,
      PRIMARY KEY (snapshot_id, first_ordinal)
    );
    ALTER TABLE sync.snapshot_session_blocks ALTER COLUMN rows SET STORAGE EXTERNAL;
  END IF;
  IF to_regclass('sync.snapshot_session_builds') IS NULL THEN
    CREATE UNLOGGED TABLE sync.snapshot_session_builds (
      snapshot_id UUID PRIMARY KEY,
      lock_key INTEGER NOT NULL,
      state TEXT NOT NULL DEFAULT 'building',
      failure TEXT,
      message TEXT,
      built_rows BIGINT NOT NULL DEFAULT 0
    );
  END IF;
END
$do$;
CREATE OR REPLACE FUNCTION sync.snapshot_row_mismatch(table_name TEXT, key_bytes BYTEA, present TEXT)
RETURNS TEXT LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '${SNAPSHOT_MISMATCH_SQLSTATE}',
    MESSAGE = format('row %s of %s exists only in %s', encode(key_bytes, 'hex'), table_name,
                     CASE present WHEN 'business' THEN 'the business table' ELSE 'row_state (live)' END);
END
$fn$;
${cascadeSql(
  {
    ...SNAPSHOT_ROWS_CASCADE,
    children: [
      { table: 'sync.snapshot_session_blocks', key: ['snapshot_id'] },
      { table: 'sync.snapshot_session_builds', key: ['snapshot_id'] },
      ...SNAPSHOT_ROWS_CASCADE.children,
    ],
  },
  true,
)}`;
