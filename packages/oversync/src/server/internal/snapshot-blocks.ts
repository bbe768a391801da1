import { goJsonString } from '../../shared/canonical-json.js';
import type { SnapshotSession } from '../../shared/wire.js';
import type { SyncQuerier } from '../database.js';
import { SyncServerError } from '../errors.js';
import { quoteIdent, quoteLiteral } from './db.js';
import { type CatalogColumn, CURRENT_COLUMNS_SQL, payloadTextSql } from './payload-sql.js';
import { KEY_KIND_UUID } from './schema-sql.js';
import { SNAPSHOT_BLOCK_ROWS, SNAPSHOT_MISMATCH_SQLSTATE } from './snapshot-sql.js';
import { SCOPE_COLUMN, type TableInfo } from './topology.js';

/**
 * One pass over a table: live row_state entries FULL JOIN the scope's business rows, written as
 * blocks from ordinal `offset + 1`. Both sides must match one to one; a row on one side only is a
 * capture inconsistency, and the row expression then calls sync.snapshot_row_mismatch(), which
 * raises SNAPSHOT_MISMATCH_SQLSTATE (rethrown here as OVERSYNC_INTERNAL). No separate count
 * queries: on freshly written rows their index-only scans fetch every heap tuple and cost a third
 * of the materialisation.
 */
export async function insertTableBlocks(
  tx: SyncQuerier,
  info: TableInfo,
  columns: readonly CatalogColumn[],
  snapshotId: string,
  offset: number,
  userPk: string,
  userId: string,
): Promise<{ rows: number; bytes: number }> {
  const keyCol = `src.${quoteIdent(info.keyColumn)}`;
  const ins = await tx
    .query<{ n: string | null; bytes: string | null }>(
      `WITH ins AS (
     INSERT INTO sync.snapshot_session_blocks (snapshot_id, first_ordinal, row_count, payload_bytes, rows)
     SELECT $1, $2 + min(o), count(*), sum(octet_length(p)),
      array_agg(CASE WHEN matched THEN ${rowWireSql(info)}
         ELSE sync.snapshot_row_mismatch($6, k, present) END ORDER BY o)
       FROM (SELECT row_number() OVER (ORDER BY ${keyOrderSql(info)}) AS o, k, v, p, kt, matched, present
         FROM (SELECT coalesce(${keyBytesSql(info)}, rs.key_bytes) AS k, ${keyCol} AS kv, rs.bundle_seq AS v,
          ${payloadTextSql(columns, SCOPE_COLUMN, info.byteaColumns)} AS p, ${keyJsonSql(info)} AS kt,
          (${keyCol} IS NOT NULL AND rs.key_bytes IS NOT NULL) AS matched,
          CASE WHEN ${keyCol} IS NULL THEN 'row_state' ELSE 'business' END AS present
           FROM (SELECT * FROM ${info.qualified} WHERE ${SCOPE_COLUMN} = $5) AS src
           FULL JOIN (SELECT key_bytes, bundle_seq FROM sync.row_state
           WHERE user_pk = $4 AND table_id = $3 AND NOT deleted) AS rs
             ON rs.key_bytes = ${keyBytesSql(info)}) AS t) AS u
      GROUP BY (o - 1) / ${SNAPSHOT_BLOCK_ROWS}
     RETURNING row_count, payload_bytes)
   SELECT sum(row_count)::text AS n, sum(payload_bytes)::text AS bytes FROM ins`,
      [snapshotId, offset, info.tableId, userPk, userId, info.name],
    )
    .catch((err: unknown) => {
      throw asMismatch(err, info);
    });
  return { rows: Number(ins.rows[0]!.n ?? 0), bytes: Number(ins.rows[0]!.bytes ?? 0) };
}

/** A mismatch raised by sync.snapshot_row_mismatch() as the create's OVERSYNC_INTERNAL error; other errors as they are. */
export function asMismatch(err: unknown, info: TableInfo): unknown {
  const mismatch = findSqlState(err, SNAPSHOT_MISMATCH_SQLSTATE);
  if (!mismatch) return err;
  return new SyncServerError(
    'OVERSYNC_INTERNAL',
    `snapshot of ${info.name} is inconsistent: ${mismatch.message}`,
    {
      cause: err,
    },
  );
}

/** The server error with SQLSTATE `code` on `err` or in its `cause` chain (drivers and pools wrap it). */
export function findSqlState(err: unknown, code: string): Error | undefined {
  let cur: unknown = err;
  for (let i = 0; i < 8 && typeof cur === 'object' && cur !== null; i++) {
    if ((cur as { code?: unknown }).code === code) return cur as Error;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Key bytes of a source row (`src`): the order of rows within a table and the row_state join key. */
export function keyBytesSql(info: TableInfo): string {
  const col = `src.${quoteIdent(info.keyColumn)}`;
  return info.keyKind === KEY_KIND_UUID ? `uuid_send(${col})` : `convert_to(${col}, 'UTF8')`;
}

/**
 * Sort key of the snapshot order (key bytes) over the joined rows `t`: a uuid sorts like its bytes
 * and compares faster as a uuid; rows without a business row raise before their position matters.
 */
export function keyOrderSql(info: TableInfo): string {
  return info.keyKind === KEY_KIND_UUID ? 'kv' : 'k';
}

/** The key value of a source row as JSON text (a UUID in its canonical lower-case text form). */
export function keyJsonSql(info: TableInfo): string {
  const col = `src.${quoteIdent(info.keyColumn)}`;
  return info.keyKind === KEY_KIND_UUID ? `'"' || ${col}::text || '"'` : `to_json(${col})::text`;
}

/**
 * One finished wire row (a `SnapshotRow` as compact JSON) from the key JSON `kt`, row version `v`
 * and payload text `p`: the per-table constant prefix (schema, table, key column) is encoded here once.
 */
export function rowWireSql(info: TableInfo, kt = 'kt', v = 'v', p = 'p'): string {
  return `${quoteLiteral(rowWirePrefix(info))} || ${kt} || '},"row_version":' || ${v}::text || ',"payload":' || ${p} || '}'`;
}

/** The constant start of a table's wire rows, up to the key's value. */
export function rowWirePrefix(info: TableInfo): string {
  return `{"schema":${goJsonString(info.schema)},"table":${goJsonString(info.table)},"key":{${goJsonString(info.keyColumn)}:`;
}

/**
 * Locks the registered tables against an ALTER TABLE (ACCESS SHARE, to the end of the transaction)
 * and reads their current columns: payloads are rendered column by column from the live catalog
 * (payload-sql.ts), and the lock keeps the columns from changing between reading them and reading
 * the rows. One list per table, in `tables` order.
 */
export async function lockAndReadColumns(
  tx: SyncQuerier,
  tables: readonly TableInfo[],
): Promise<CatalogColumn[][]> {
  const columns: CatalogColumn[][] = tables.map(() => []);
  if (tables.length === 0) return columns;
  await tx.query(`LOCK TABLE ${tables.map((t) => t.qualified).join(', ')} IN ACCESS SHARE MODE`);
  const cols = await tx.query<{ ord: number; name: string; type: string }>(CURRENT_COLUMNS_SQL, [
    tables.map((t) => t.qualified),
  ]);
  for (const c of cols.rows) columns[c.ord - 1]!.push({ name: c.name, type: c.type });
  return columns;
}

/**
 * The create's answer (§1.10): `byte_count` is omitted for an empty snapshot, as the reference's
 * `omitempty` does. Used by the synchronous and the pipelined create, so both answer alike.
 */
export function sessionAnswer(
  snapshotId: string,
  snapshotSeq: number,
  rows: number,
  bytes: number,
  expiresAt: string,
): SnapshotSession {
  const res: SnapshotSession = {
    snapshot_id: snapshotId,
    snapshot_bundle_seq: snapshotSeq,
    row_count: rows,
    expires_at: expiresAt,
  };
  if (bytes > 0) res.byte_count = bytes;
  return res;
}
