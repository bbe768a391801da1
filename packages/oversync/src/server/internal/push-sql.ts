/**
 * Storage of staged push chunks (§4.2): one row per uploaded chunk instead of one per pushed row.
 *
 * The reference stages every row of a chunk into `sync.push_session_rows` (a heap tuple, a btree
 * entry and a JSON value per row) and reads them back row by row at commit, re-parsing every payload
 * to find its column set. Here a chunk is validated once, at upload, and stored as two texts: `meta`,
 * a JSON object of parallel arrays (table ids, key strings, op codes, base versions, and per row the
 * index of its sorted payload column list in `cols`), and `payloads`, the rows' apply payloads
 * (JSON, bytea as `\x<hex>`; empty for DELETE) joined by newlines — JSON text from JSON.stringify
 * or the canonical encoder never contains a raw newline. Both are stored out of line without compression (`STORAGE EXTERNAL`):
 * pglz costs more CPU than it saves on data that lives for minutes.
 *
 * Like the other session tables the chunk table is UNLOGGED and has no FK to its header: a
 * statement-level trigger on `sync.push_sessions` deletes a session's chunks (session DELETE, the
 * expiry sweep, commit, user deletion). `sync.push_session_rows` stays in the layout, unused.
 */
import { cascadeSql } from './cascade-sql.js';

export const PUSH_STORAGE_SQL = `
DO $do$
BEGIN
  IF to_regclass('sync.push_session_chunks') IS NULL THEN
    CREATE UNLOGGED TABLE sync.push_session_chunks (
      push_id UUID NOT NULL,
      start_row_ordinal BIGINT NOT NULL,
      row_count INTEGER NOT NULL,
      meta TEXT NOT NULL,
      payloads TEXT NOT NULL,
      PRIMARY KEY (push_id, start_row_ordinal)
    );
    ALTER TABLE sync.push_session_chunks ALTER COLUMN meta SET STORAGE EXTERNAL;
    ALTER TABLE sync.push_session_chunks ALTER COLUMN payloads SET STORAGE EXTERNAL;
  END IF;
END
$do$;
${cascadeSql(
  {
    fn: 'delete_push_session_chunks',
    trigger: 'oversync_push_session_chunks_cascade',
    parent: 'sync.push_sessions',
    oldRows: 'oversync_old_sessions',
    children: [{ table: 'sync.push_session_chunks', key: ['push_id'] }],
  },
  true,
)}`;
