/** Bundle finalisation (§3.4): captured events → normalised rows → bundle_seq, hash, log, rows, row_state. */

import { computeBundleHash } from '../../shared/bundle-hash.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import type { Bundle, BundleRow } from '../../shared/wire.js';
import type { Topology } from './bootstrap.js';
import type { SyncQuerier } from './db.js';
import { opName, toWirePayload, wireKey } from './rows.js';
import { OP_DELETE, OP_INSERT, OP_UPDATE } from './schema-sql.js';

interface StageRow {
  ord: string;
  table_id: number;
  op_code: number;
  key_bytes: Buffer;
  payload: string | null;
}

interface Acc {
  firstOrd: bigint;
  firstOp: number;
  lastOp: number;
  lastPayload: string | null;
  tableId: number;
  keyBytes: Buffer;
}

export interface FinalizedBundle extends Bundle {
  row_count: number;
  bundle_hash: string;
  /** Canonical wire payload text per row (null for DELETE), aligned with `rows`. */
  readonly payloadTexts: readonly (string | null)[];
}

/** `[t0,t1,…]` from JSON texts (null ⇒ `null`). */
export function jsonArrayOf(texts: readonly (string | null)[]): string {
  return `[${texts.map((t) => t ?? 'null').join(',')}]`;
}

/**
 * Finalises the bundle captured in the current transaction for `userPk`. Returns null when no
 * business-table effect remains (nothing is written and no bundle_seq is consumed).
 */
export async function finalizeCapturedBundle(
  tx: SyncQuerier,
  topology: Topology,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  notifyChannel: string | undefined,
): Promise<FinalizedBundle | null> {
  const stage = await tx.query<StageRow>(
    `SELECT capture_ordinal::text AS ord, table_id, op_code, key_bytes, payload_db::text AS payload
       FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1 ORDER BY capture_ordinal`,
    [userPk],
  );
  if (stage.rows.length === 0) return null;

  const accs = new Map<string, Acc>();
  for (const e of stage.rows) {
    const id = `${e.table_id}:${e.key_bytes.toString('hex')}`;
    let acc = accs.get(id);
    if (!acc) {
      acc = {
        firstOrd: BigInt(e.ord),
        firstOp: e.op_code,
        lastOp: e.op_code,
        lastPayload: null,
        tableId: e.table_id,
        keyBytes: e.key_bytes,
      };
      accs.set(id, acc);
    }
    acc.lastOp = e.op_code;
    acc.lastPayload = e.payload;
  }
  const normalized: Array<{ acc: Acc; op: number }> = [];
  for (const acc of accs.values()) {
    if (acc.lastOp === OP_DELETE) {
      if (acc.firstOp === OP_INSERT) continue;
      normalized.push({ acc, op: OP_DELETE });
    } else {
      normalized.push({ acc, op: acc.firstOp === OP_INSERT ? OP_INSERT : OP_UPDATE });
    }
  }
  if (normalized.length === 0) {
    await tx.query('DELETE FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1', [
      userPk,
    ]);
    return null;
  }
  normalized.sort((a, b) => {
    if (a.acc.firstOrd !== b.acc.firstOrd) return a.acc.firstOrd < b.acc.firstOrd ? -1 : 1;
    if (a.acc.tableId !== b.acc.tableId) return a.acc.tableId - b.acc.tableId;
    return Buffer.compare(a.acc.keyBytes, b.acc.keyBytes);
  });

  const seqRes = await tx.query<{ seq: string }>(
    'UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1 WHERE user_pk = $1 RETURNING (next_bundle_seq - 1)::text AS seq',
    [userPk],
  );
  const bundleSeq = Number(seqRes.rows[0]!.seq);

  const rows: BundleRow[] = [];
  const payloadTexts: (string | null)[] = [];
  for (const { acc, op } of normalized) {
    const info = topology.byId.get(acc.tableId);
    if (!info) throw new Error(`captured row for unknown table_id ${acc.tableId}`);
    const row: BundleRow = {
      schema: info.schema,
      table: info.table,
      key: wireKey(info, acc.keyBytes),
      op: opName(op),
      row_version: bundleSeq,
    };
    if (op !== OP_DELETE) {
      const payload = toWirePayload(info, JSON.parse(acc.lastPayload!) as Record<string, unknown>);
      row.payload = payload;
      payloadTexts.push(canonicalJson(payload));
    } else {
      payloadTexts.push(null);
    }
    rows.push(row);
  }
  const hash = computeBundleHash(rows, payloadTexts);

  await tx.query(
    `INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
     VALUES ($1, $2, $3, $4, $5, $6, decode($7, 'hex'))`,
    [userPk, bundleSeq, source.sourceId, source.sourceBundleId, rows.length, hash.byteCount, hash.hex],
  );
  if (notifyChannel !== undefined) {
    await tx.query('SELECT pg_notify($1, $2)', [
      notifyChannel,
      JSON.stringify({
        user_pk: Number(userPk),
        bundle_seq: bundleSeq,
        source_id: source.sourceId,
        source_bundle_id: source.sourceBundleId,
      }),
    ]);
  }
  const tableIds = normalized.map((n) => n.acc.tableId);
  const keys = normalized.map((n) => n.acc.keyBytes);
  const ops = normalized.map((n) => n.op);
  await tx.query(
    `INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
     SELECT $1, $2, r.ord, r.table_id, r.key_bytes, r.op_code, CASE WHEN r.op_code = 3 THEN NULL ELSE r.payload END
       FROM ROWS FROM (unnest($3::int4[]), unnest($4::bytea[]), unnest($5::int2[]), json_array_elements($6::json))
            WITH ORDINALITY AS r(table_id, key_bytes, op_code, payload, ord)`,
    // Payloads travel as one JSON array (json keeps each element's text verbatim), not a text[] literal.
    [userPk, bundleSeq, tableIds, keys, ops, jsonArrayOf(payloadTexts)],
  );
  await tx.query(
    `INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
     SELECT $1, r.table_id, r.key_bytes, $2, r.op_code = 3
       FROM unnest($3::int4[], $4::bytea[], $5::int2[]) AS r(table_id, key_bytes, op_code)
     ON CONFLICT (user_pk, table_id, key_bytes) DO UPDATE SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted`,
    [userPk, bundleSeq, tableIds, keys, ops],
  );
  await tx.query('DELETE FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1', [
    userPk,
  ]);
  return {
    bundle_seq: bundleSeq,
    source_id: source.sourceId,
    source_bundle_id: source.sourceBundleId,
    row_count: rows.length,
    bundle_hash: hash.hex,
    rows,
    payloadTexts,
  };
}
