/**
 * How a push session's rows are staged between chunk upload and commit: the `meta` format of a
 * staged chunk (written by push-chunk.ts) and reading the chunks back, in row order and checked,
 * as the rows a commit applies.
 */

import type { SyncQuerier } from '../database.js';
import { wireError } from '../errors.js';
import type { SessionRow } from './push-session.js';
import { keyHexOf, type StagedRowInput } from './rows.js';
import type { TableInfo, Topology } from './topology.js';

/** The `meta` text of a staged chunk (see push-sql.ts): parallel arrays, column lists deduplicated. */
interface ChunkMeta {
  /** table_id per row */
  t: number[];
  /** key string per row */
  k: string[];
  /** op_code per row */
  o: number[];
  /** base_row_version per row */
  b: number[];
  /** index into `c` per row */
  s: number[];
  /** distinct sorted payload column lists ('' for DELETE) */
  c: string[];
  /**
   * key_bytes as hex per row (chunks staged since issue #19: a commit reads the rows' row_state
   * with its session, push-commit.ts); absent in chunks staged before.
   */
  h?: string[];
}

export function chunkMetaOf(rows: readonly StagedRowInput[]): string {
  const meta: ChunkMeta = { t: [], k: [], o: [], b: [], s: [], c: [], h: [] };
  const colIdx = new Map<string, number>();
  for (const r of rows) {
    let i = colIdx.get(r.cols);
    if (i === undefined) {
      i = meta.c.length;
      colIdx.set(r.cols, i);
      meta.c.push(r.cols);
    }
    meta.t.push(r.info.tableId);
    meta.k.push(r.keyString);
    meta.o.push(r.opCode);
    meta.b.push(r.baseRowVersion);
    meta.s.push(i);
    meta.h!.push(keyHexOf(r.info, r.keyString));
  }
  return JSON.stringify(meta);
}

/** One staged row at commit. */
export interface ApplyRow {
  info: TableInfo;
  op: number;
  keyString: string;
  /** key_bytes as hex */
  keyHex: string;
  base: number;
  /** No row_state entry existed at conflict detection (so finalisation can insert, not upsert). */
  fresh: boolean;
  /** Sorted payload columns (validated against the table's catalogued columns). */
  cols: readonly string[];
  /** `cols` as staged (comma-separated): rows with equal table, op and sig share a statement. */
  sig: string;
  /** Apply payload text (JSON, bytea as `\x<hex>`); '' for DELETE. */
  payload: string;
}

/** A staged chunk as read back. */
export interface StagedChunk {
  start: string;
  row_count: number;
  meta: string;
  payloads: string;
}

/**
 * Reads a session's staged chunks back in row order and checks they form rows 0..planned-1 (a
 * one-request push, without a session id, passes its one chunk).
 */
export async function loadStagedRows(
  tx: SyncQuerier,
  topology: Topology,
  pushId: string | undefined,
  s: SessionRow,
  /** The session's chunks when the caller read them already, in row order. */
  prefetched?: readonly StagedChunk[],
): Promise<ApplyRow[]> {
  if (!prefetched && pushId === undefined) throw new Error('loadStagedRows: no push session and no chunks');
  const chunks = prefetched
    ? { rows: prefetched }
    : await tx.query<StagedChunk>(
        `SELECT start_row_ordinal::text AS start, row_count, meta, payloads
           FROM sync.push_session_chunks WHERE push_id = $1 ORDER BY start_row_ordinal`,
        [pushId],
      );
  const planned = Number(s.planned_row_count);
  let staged = 0;
  for (const c of chunks.rows) staged += c.row_count;
  if (Number(s.next_expected_row_ordinal) !== planned || staged !== planned) {
    throw wireError(
      'push_commit_invalid',
      `staged row count ${staged} does not match planned_row_count ${planned}`,
    );
  }
  const seen = new Set<string>();
  const rows: ApplyRow[] = [];
  for (const c of chunks.rows) {
    if (Number(c.start) !== rows.length) {
      throw wireError('push_commit_invalid', `staged rows are not contiguous at row_ordinal ${rows.length}`);
    }
    const meta = JSON.parse(c.meta) as ChunkMeta;
    const payloads = c.payloads.split('\n');
    if (
      meta.t.length !== c.row_count ||
      payloads.length !== c.row_count ||
      (meta.h !== undefined && meta.h.length !== c.row_count)
    ) {
      throw new Error(`staged chunk at ${c.start} of push ${pushId ?? '(one request)'} is damaged`);
    }
    const colLists = meta.c.map((sig) => (sig === '' ? [] : sig.split(',')));
    for (let i = 0; i < c.row_count; i++) {
      const info = topology.byId.get(meta.t[i]!);
      if (!info) throw new Error(`staged row for unknown table_id ${meta.t[i]}`);
      const keyString = meta.k[i]!;
      const id = `${info.tableId}:${keyString}`;
      if (seen.has(id)) {
        throw wireError(
          'push_commit_invalid',
          `duplicate target row in staged push session: ${info.name} ${keyString}`,
        );
      }
      seen.add(id);
      const sigIdx = meta.s[i]!;
      rows.push({
        info,
        op: meta.o[i]!,
        keyString,
        keyHex: meta.h?.[i] ?? keyHexOf(info, keyString),
        base: meta.b[i]!,
        fresh: false,
        cols: colLists[sigIdx]!,
        sig: meta.c[sigIdx]!,
        payload: payloads[i]!,
      });
    }
  }
  // Columns were checked at upload; the catalogue is fixed since bootstrap, so this only guards
  // against a session staged under another registration.
  const checked = new Set<string>();
  for (const r of rows) {
    const id = `${r.info.tableId}:${r.sig}`;
    if (checked.has(id)) continue;
    checked.add(id);
    for (const c of r.cols) {
      if (!r.info.columns.has(c))
        throw wireError('push_commit_invalid', `staged payload has unknown column ${c}`);
    }
  }
  return rows;
}
