/** Bundle finalisation (§3.4): captured events → normalised rows → bundle_seq, hash, log, rows, row_state. */

import { computeBundleHash, type HashableBundleRow } from '../../shared/bundle-hash.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import type { Bundle, BundleRow, SyncKey } from '../../shared/wire.js';
import { keyHexOf, keyStringOf, opName, toWirePayload } from './rows.js';
import type { TableInfo, Topology } from './topology.js';

/** Stands for a present payload in hash rows whose canonical payload text is passed alongside. */
export const PAYLOAD_PRESENT = true;

import type { SyncQuerier } from '../database.js';
import type { StatementBatch } from './batch.js';
import { OP_DELETE, OP_INSERT, OP_UPDATE } from './schema-sql.js';

interface StageRow {
  ord: string;
  table_id: number;
  op_code: number;
  key_bytes: Buffer;
  payload: string | null;
}

/**
 * An INSERT a push commit captured itself, from its statement's `RETURNING`, instead of through
 * the capture stage (see `DIRECT_INSERT_TABLES_GUC`).
 */
export interface DirectInsertEvent {
  /** Drawn from the stage's capture_ordinal sequence while the row was inserted. */
  readonly ord: number;
  readonly info: TableInfo;
  readonly keyString: string;
  /** key_bytes as hex */
  readonly keyHex: string;
  /** The key had no row_state entry before this bundle (checked under the user's lock). */
  readonly fresh: boolean;
  /** `canonical`: the wire payload's canonical JSON; otherwise `to_jsonb(row) - scope` text. */
  readonly payload: string;
  readonly canonical: boolean;
}

interface Acc {
  firstOrd: number;
  firstOp: number;
  lastOp: number;
  lastPayload: string | null;
  lastCanonical: boolean;
  info: TableInfo;
  keyString: string;
  keyHex: string | undefined;
  /** First event is a direct INSERT of a key without row_state. */
  fresh: boolean;
}

/** A committed bundle as a finalisation returns it. */
export interface FinalizedBundle extends Bundle {
  row_count: number;
  bundle_hash: string;
}

/** What a push commit needs of the bundle it finalised. */
export type CapturedBundle = Pick<FinalizedBundle, 'bundle_seq' | 'row_count' | 'bundle_hash'>;

/** `[t0,t1,…]` from JSON texts (null ⇒ `null`). */
export function jsonArrayOf(texts: readonly (string | null)[]): string {
  return `[${texts.map((t) => t ?? 'null').join(',')}]`;
}

function ordinalOf(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`capture ordinal ${text} is beyond 2^53`);
  return n;
}

/** Canonical wire payload text of a captured `to_jsonb(row) - scope` text (§11.6). */
function wirePayloadOf(info: TableInfo, dbText: string): string {
  return canonicalJson(toWirePayload(info, JSON.parse(dbText) as Record<string, unknown>));
}

/** Allocates the user's next bundle_seq (the user_state row lock makes it gapless per user). */
export async function allocateBundleSeq(tx: SyncQuerier, userPk: string): Promise<number> {
  const r = await tx.query<{ seq: string }>(
    'UPDATE sync.user_state SET next_bundle_seq = next_bundle_seq + 1 WHERE user_pk = $1 RETURNING (next_bundle_seq - 1)::text AS seq',
    [userPk],
  );
  return Number(r.rows[0]!.seq);
}

/** The bundle-change NOTIFY of a bundle committed with the transaction (watch enabled only). */
/** The payload of a committed bundle's notification (what watch.ts reads). */
export function bundleNotification(
  userPk: string,
  bundleSeq: number,
  source: { sourceId: string; sourceBundleId: number },
): string {
  return JSON.stringify({
    user_pk: Number(userPk),
    bundle_seq: bundleSeq,
    source_id: source.sourceId,
    source_bundle_id: source.sourceBundleId,
  });
}

function notifyStatement(
  notifyChannel: string,
  userPk: string,
  bundleSeq: number,
  source: { sourceId: string; sourceBundleId: number },
): [string, unknown[]] {
  return ['SELECT pg_notify($1, $2)', [notifyChannel, bundleNotification(userPk, bundleSeq, source)]];
}

export async function notifyBundle(
  tx: SyncQuerier,
  notifyChannel: string | undefined,
  userPk: string,
  bundleSeq: number,
  source: { sourceId: string; sourceBundleId: number },
): Promise<void> {
  if (notifyChannel === undefined) return;
  const [sql, params] = notifyStatement(notifyChannel, userPk, bundleSeq, source);
  await tx.query(sql, params);
}

/** notifyBundle queued on a batch (sent with its next statement; NOTIFY is delivered at COMMIT). */
export function notifyBundleLater(
  tx: StatementBatch,
  notifyChannel: string | undefined,
  userPk: string,
  bundleSeq: number,
  source: { sourceId: string; sourceBundleId: number },
): void {
  if (notifyChannel === undefined) return;
  const [sql, params] = notifyStatement(notifyChannel, userPk, bundleSeq, source);
  tx.later(sql, params);
}

/**
 * The bundle captured in the current transaction for `userPk`, finalised by the database's
 * `sync.finalize_captured_bundle` (backend-writes-sql.ts), the one finalisation that backend writes
 * run at COMMIT: server-originated writes use it too, then read the committed rows back. Null when
 * no business-table effect remains (nothing written, no bundle_seq consumed).
 */
export async function finalizeCapturedBundleSql(
  tx: SyncQuerier,
  topology: Topology,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  notifyChannel: string | undefined,
): Promise<FinalizedBundle | null> {
  const f = await tx.query<{ seq: string | null }>(
    'SELECT sync.finalize_captured_bundle($1, $2, $3, $4)::text AS seq',
    [userPk, source.sourceId, source.sourceBundleId, notifyChannel ?? null],
  );
  const seq = f.rows[0]?.seq;
  if (seq === null || seq === undefined) return null;
  const bundleSeq = Number(seq);
  const r = await tx.query<{
    hash: string;
    table_id: number;
    key_bytes: Buffer;
    op_code: number;
    payload: string | null;
  }>(
    `SELECT encode(l.bundle_hash, 'hex') AS hash, r.table_id, r.key_bytes, r.op_code, r.payload_wire::text AS payload
       FROM sync.bundle_log l JOIN sync.bundle_rows r ON r.user_pk = l.user_pk AND r.bundle_seq = l.bundle_seq
      WHERE l.user_pk = $1 AND l.bundle_seq = $2 ORDER BY r.row_ordinal`,
    [userPk, bundleSeq],
  );
  const rows = r.rows.map((x): BundleRow => {
    const info = topology.byId.get(x.table_id);
    if (!info) throw new Error(`committed row for unknown table_id ${x.table_id}`);
    const row: BundleRow = {
      schema: info.schema,
      table: info.table,
      key: { [info.keyColumn]: keyStringOf(info, x.key_bytes) },
      op: opName(x.op_code),
      row_version: bundleSeq,
    };
    if (x.payload !== null) row.payload = JSON.parse(x.payload) as Record<string, unknown>;
    return row;
  });
  return {
    bundle_seq: bundleSeq,
    source_id: source.sourceId,
    source_bundle_id: source.sourceBundleId,
    row_count: rows.length,
    bundle_hash: r.rows[0]!.hash,
    rows,
  };
}

/**
 * Finalises the bundle a push commit captured in the current transaction for `userPk`: the
 * stage's events plus `direct` ones (INSERTs the commit recorded from RETURNING), normalised per
 * row and ordered by capture ordinal, as `sync.finalize_captured_bundle` does for the stage alone.
 * Returns null when no business-table effect remains (nothing is written and no bundle_seq is
 * consumed). Pushes keep this TypeScript finalisation: it merges the direct INSERT events and
 * canonicalises payloads in JS, where the SQL one costs more per row (see the README).
 */
export async function finalizeCapturedBundle(
  tx: SyncQuerier,
  topology: Topology,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  notifyChannel: string | undefined,
  opts: { direct?: readonly DirectInsertEvent[] } = {},
): Promise<CapturedBundle | null> {
  const stage = await tx.query<StageRow>(
    `SELECT capture_ordinal::text AS ord, table_id, op_code, key_bytes, payload_db::text AS payload
       FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1 ORDER BY capture_ordinal`,
    [userPk],
  );
  const direct = opts.direct ?? [];
  if (stage.rows.length === 0 && direct.length === 0) return null;

  const accs = new Map<string, Acc>();
  const add = (
    ord: number,
    info: TableInfo,
    op: number,
    keyString: string,
    keyHex: string | undefined,
    payload: string | null,
    canonical: boolean,
    fresh: boolean,
  ) => {
    const id = `${info.tableId}:${keyString}`;
    let acc = accs.get(id);
    if (!acc) {
      acc = {
        firstOrd: ord,
        firstOp: op,
        lastOp: op,
        lastPayload: null,
        lastCanonical: false,
        info,
        keyString,
        keyHex,
        fresh,
      };
      accs.set(id, acc);
    }
    acc.lastOp = op;
    acc.lastPayload = payload;
    acc.lastCanonical = canonical;
  };
  const addDirect = (x: DirectInsertEvent) =>
    add(x.ord, x.info, OP_INSERT, x.keyString, x.keyHex, x.payload, x.canonical, x.fresh);
  // Both lists are in capture order; merge them so every key's first and last event are right.
  let d = 0;
  for (const e of stage.rows) {
    const ord = ordinalOf(e.ord);
    for (; d < direct.length && direct[d]!.ord < ord; d++) addDirect(direct[d]!);
    const info = topology.byId.get(e.table_id);
    if (!info) throw new Error(`captured row for unknown table_id ${e.table_id}`);
    const keyString = keyStringOf(info, e.key_bytes);
    add(ord, info, e.op_code, keyString, e.key_bytes.toString('hex'), e.payload, false, false);
  }
  for (; d < direct.length; d++) addDirect(direct[d]!);

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
  // Map iteration is first-insertion order, i.e. first capture ordinal: already sorted.

  const bundleSeq = await allocateBundleSeq(tx, userPk);

  const hashRows: HashableBundleRow[] = [];
  const payloadTexts: (string | null)[] = [];
  const tableIds: number[] = [];
  const keys: string[] = [];
  const ops: number[] = [];
  // row_state: keys known to have no entry yet are plainly inserted, the others upserted.
  const freshTables: number[] = [];
  const freshKeys: string[] = [];
  const otherTables: number[] = [];
  const otherKeys: string[] = [];
  const otherOps: number[] = [];
  for (const { acc, op } of normalized) {
    const info = acc.info;
    const key: SyncKey = { [info.keyColumn]: acc.keyString };
    const opText = opName(op);
    let text: string | null = null;
    if (op !== OP_DELETE) text = acc.lastCanonical ? acc.lastPayload! : wirePayloadOf(info, acc.lastPayload!);
    payloadTexts.push(text);
    hashRows.push({
      schema: info.schema,
      table: info.table,
      key,
      op: opText,
      row_version: bundleSeq,
      payload: text === null ? null : PAYLOAD_PRESENT,
    });
    tableIds.push(info.tableId);
    const keyHex = acc.keyHex ?? keyHexOf(info, acc.keyString);
    keys.push(keyHex);
    ops.push(op);
    if (op === OP_INSERT && acc.fresh) {
      freshTables.push(info.tableId);
      freshKeys.push(keyHex);
    } else {
      otherTables.push(info.tableId);
      otherKeys.push(keyHex);
      otherOps.push(op);
    }
  }
  const hash = computeBundleHash(hashRows, payloadTexts);

  await tx.query(
    `INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
     VALUES ($1, $2, $3, $4, $5, $6, decode($7, 'hex'))`,
    [userPk, bundleSeq, source.sourceId, source.sourceBundleId, normalized.length, hash.byteCount, hash.hex],
  );
  await notifyBundle(tx, notifyChannel, userPk, bundleSeq, source);
  // One statement writes the bundle's rows and their row_state.
  await tx.query(
    `WITH fresh_state AS (
       INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
       SELECT $1, f.table_id, decode(f.key_hex, 'hex'), $2, FALSE
         FROM unnest($7::int4[], $8::text[]) AS f(table_id, key_hex)),
     other_state AS (
       INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
       SELECT $1, o.table_id, decode(o.key_hex, 'hex'), $2, o.op_code = 3
         FROM unnest($9::int4[], $10::text[], $11::int2[]) AS o(table_id, key_hex, op_code)
       ON CONFLICT (user_pk, table_id, key_bytes)
       DO UPDATE SET bundle_seq = EXCLUDED.bundle_seq, deleted = EXCLUDED.deleted)
     INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
     SELECT $1, $2, r.ord, r.table_id, decode(r.key_hex, 'hex'), r.op_code,
            CASE WHEN r.op_code = 3 THEN NULL ELSE r.payload END
       FROM ROWS FROM (unnest($3::int4[]), unnest($4::text[]), unnest($5::int2[]), json_array_elements($6::json))
            WITH ORDINALITY AS r(table_id, key_hex, op_code, payload, ord)`,
    // Payloads travel as one JSON array (json keeps each element's text verbatim), not a text[] literal.
    [
      userPk,
      bundleSeq,
      tableIds,
      keys,
      ops,
      jsonArrayOf(payloadTexts),
      freshTables,
      freshKeys,
      otherTables,
      otherKeys,
      otherOps,
    ],
  );
  if (stage.rows.length > 0) {
    await tx.query('DELETE FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1', [
      userPk,
    ]);
  }
  return { bundle_seq: bundleSeq, row_count: normalized.length, bundle_hash: hash.hex };
}
