/**
 * Replay: fetch the committed rows of our own pushed bundle, check their count and hash, and write
 * them back as authoritative, keeping every local edit made since the freeze (re-queued on top of
 * the committed version). An `already_committed` answer must first prove it carries our intents.
 */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../shared/canonical-json.js';
import type { BundleRow } from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import type { SqliteDb } from '../writer-types.js';
import { type LocalPayload, replayEquivalent, wireKeyToLocal } from './codec.js';
import { recordConflict } from './conflict-log.js';
import {
  beginApply,
  countRows,
  deleteInSlices,
  endApplySliced,
  finishReplay,
  OUTBOX_SBID,
  type OutboxState,
  requeueDirty,
  stagePushRow,
} from './local-store.js';
import { stmt } from './statements.js';
import { protocolError, type SyncContext, WIRE_OPS } from './sync-context.js';
import { keyJsonFromParams } from './table-model.js';
import { applyServerRow, type TableOps } from './table-ops.js';

/** What the server answered for our committed bundle. */
export interface CommittedMeta {
  /** `already_committed`: the rows must prove they carry the frozen intents before the replay. */
  needsProof?: boolean;
  bundleSeq: number;
  sourceId: string;
  sourceBundleId: number;
  /** -1 when unknown (resumed from a committed outbox). */
  rowCount: number;
  bundleHash: string;
}

/** Committed rows fetched, staged, replayed and cleared per slice. */
const REPLAY_PAGE_ROWS = 500;

/**
 * Fetches the committed rows of our bundle page by page (the next page is requested while the
 * current one is staged), stages each page into `_sync_push_stage` in its own short transaction,
 * hashes as it goes, verifies count and hash, then replays from the stage. Memory is bounded by
 * the page size, never by the bundle size.
 */
export async function fetchAndReplay(
  ctx: SyncContext,
  meta: CommittedMeta,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<number> {
  const seq = meta.bundleSeq;
  const clearStage = async () =>
    ctx.runner.sliced(
      function* (db) {
        yield* deleteInSlices(db, '_sync_push_stage', ['bundle_seq', 'row_ordinal']);
      },
      signal,
      await ctx.runner.read((db) => countRows(db, '_sync_push_stage'), signal),
    );
  await clearStage();
  const hash = createHash('sha256').update('[');
  let after = -1;
  let expectedCount = meta.rowCount;
  const fetchPage = (from: number) =>
    ctx.remote.committedBundleRows(
      seq,
      { maxRows: ctx.cfg.downloadLimit, afterRowOrdinal: from >= 0 ? from : undefined },
      signal,
    );
  let pending = fetchPage(after);
  for (;;) {
    const page = await pending;
    const pr = page.rows ?? [];
    if (
      page.bundle_seq !== seq ||
      page.source_id !== outbox.sourceId ||
      page.source_bundle_id !== outbox.sourceBundleId ||
      page.bundle_hash !== meta.bundleHash ||
      (expectedCount >= 0 && page.row_count !== expectedCount)
    ) {
      throw protocolError('committed bundle page metadata does not match the commit');
    }
    expectedCount = page.row_count;
    if (pr.length > 0 && page.next_row_ordinal !== after + pr.length) {
      throw protocolError('committed bundle page has a wrong next_row_ordinal');
    }
    if (page.has_more && pr.length === 0) throw protocolError('committed bundle page: has_more without rows');
    if (page.has_more) {
      pending = fetchPage(after + pr.length);
      pending.catch(() => undefined);
    }
    const base = after + 1;
    await ctx.runner.sliced(
      function* (db) {
        for (let i = 0; i < pr.length; i++) {
          const r = pr[i] as BundleRow;
          if (r.row_version <= 0 || !WIRE_OPS.has(r.op) || (r.op !== 'DELETE' && r.payload === undefined)) {
            throw protocolError('committed bundle row is malformed');
          }
          // canonical JSON of the row object is, by definition, the bundle hash input's element
          // (hashed here, inside the slices: canonical JSON of a whole page is longer than a turn)
          const el = canonicalJson({
            key: r.key,
            op: r.op,
            payload: r.op === 'DELETE' || r.payload === undefined ? null : r.payload,
            row_ordinal: base + i,
            row_version: r.row_version,
            schema: r.schema,
            table: r.table,
          });
          hash.update(base + i > 0 ? `,${el}` : el);
          const ops = ctx.checkRow(r.schema, r.table);
          const key = wireKeyToLocal(ops.m, r.key);
          stagePushRow(db, keyJsonFromParams(ops.m), {
            bundleSeq: seq,
            ordinal: base + i,
            schema: r.schema,
            table: r.table,
            keyText: key.text,
            op: r.op,
            version: r.row_version,
            payload: r.op === 'DELETE' || r.payload === undefined ? null : JSON.stringify(r.payload),
          });
          if (i % 50 === 49) yield;
        }
      },
      signal,
      pr.length,
    );
    after += pr.length;
    if (!page.has_more) break;
  }
  const got = after + 1;
  const computed = hash.update(']').digest('hex');
  if (got !== expectedCount || computed !== meta.bundleHash) {
    await clearStage(); // fails closed: the outbox stays, the stage stays empty
    if (got !== expectedCount) {
      throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'committed bundle row count does not match', {
        details: { expected: expectedCount, got },
      });
    }
    throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'staged committed bundle hash does not match', {
      details: { expected: meta.bundleHash, computed, bundleSeq: seq },
    });
  }
  await replay(ctx, meta, got, signal);
  return got;
}

/** The frozen outbox row of a key (local key_json), as the replay compares it. */
type FrozenRow = {
  row_ordinal: number;
  table_name: string;
  key_json: string;
  wire_key_json: string;
  op: string;
  base_row_version: number;
  local_payload: string | null;
};

/**
 * `already_committed`: prove the committed bundle carries the frozen intents (same table, key
 * and op; extra server-side rows allowed, and an upsert the server's own cascade removed in the
 * same commit may be missing or a DELETE). A different bundle under our source tuple means this
 * database was restored from an older copy: replace the source. Paged over the outbox.
 */
function* proveCarried(db: SqliteDb, bundleSeq: number): Generator<void, void, undefined> {
  const mismatch = () =>
    new ClientError('OVERSYNC_CLIENT_PROTOCOL', 'already committed bundle does not carry the frozen outbox', {
      details: { bundleSeq, reason: 'already_committed_mismatch' },
    });
  let exact = 0;
  let frozen = 0;
  for (let after = -1; ; ) {
    const page = stmt(
      db,
      `SELECT o.row_ordinal, o.op AS uop, s.op AS got FROM _sync_outbox_rows o
       LEFT JOIN _sync_push_stage s ON s.bundle_seq = ? AND s.table_name = o.table_name AND s.key_json = o.key_json
       WHERE o.source_bundle_id = (${OUTBOX_SBID}) AND o.row_ordinal > ?
       ORDER BY o.row_ordinal LIMIT ${REPLAY_PAGE_ROWS}`,
    ).all(bundleSeq, after) as Array<{ row_ordinal: number; uop: string; got: string | null }>;
    if (page.length === 0) break;
    for (const r of page) {
      frozen++;
      if (r.got === r.uop) exact++;
      else if (!(r.uop !== 'DELETE' && (r.got === null || r.got === 'DELETE'))) throw mismatch();
    }
    after = Number(page[page.length - 1]?.row_ordinal);
    yield;
  }
  if (exact === 0 && frozen > 0) throw mismatch();
}

/** A staged committed row of the replay with what the replay looks up for its key. */
interface StagedReplayRow {
  row_ordinal: number;
  schema_name: string;
  table_name: string;
  key_json: string;
  op: string;
  row_version: number;
  payload: string | null;
  u_row_ordinal: number | null;
  u_wire_key_json: string | null;
  u_op: string | null;
  u_base_row_version: number | null;
  u_local_payload: string | null;
  rs_version: number | null;
  rs_deleted: number | null;
  d_op: string | null;
  d_payload: string | null;
  d_base: number | null;
  d_key_json: string | null;
}

/** The frozen outbox row read with a staged row, if any. */
function frozenFrom(s: StagedReplayRow): FrozenRow | undefined {
  if (s.u_row_ordinal === null) return undefined;
  return {
    row_ordinal: s.u_row_ordinal,
    table_name: s.table_name,
    key_json: s.key_json,
    wire_key_json: String(s.u_wire_key_json),
    op: String(s.u_op),
    base_row_version: Number(s.u_base_row_version),
    local_payload: s.u_local_payload,
  };
}

/** A local key ({text, bind}) from its local key_json. */
function keyFromJson(ops: TableOps, keyJson: string): { text: string[]; bind: Array<string | Buffer> } {
  const obj = JSON.parse(keyJson) as Record<string, unknown>;
  const text = ops.m.keyColumns.map((c) => String(obj[c.key]));
  const bind = ops.m.keyColumns.map((c, i) =>
    c.isBlob ? Buffer.from(text[i] as string, 'hex') : (text[i] as string),
  );
  return { text, bind };
}

/**
 * The live local rows of a replay page's keys, read before the page is applied: one call per table
 * instead of one lookup per row (on a long replay each lookup is a call to the apply worker, which
 * was 40 % of a 200k-row push). Only for a page without deletes: nothing applied before a row in
 * such a page can remove another key's row (no cascade), and the caller uses an entry only for a
 * key's first row in the page and only when present. Undefined for a page with deletes.
 */
function pageLiveRows(
  ctx: SyncContext,
  db: SqliteDb,
  page: readonly StagedReplayRow[],
): Array<LocalPayload | undefined> | undefined {
  if (page.some((s) => s.op === 'DELETE' || s.u_op === 'DELETE')) return undefined;
  const out: Array<LocalPayload | undefined> = new Array(page.length);
  const byTable = new Map<string, { ops: TableOps; at: number[]; binds: Array<Array<string | Buffer>> }>();
  for (const [i, s] of page.entries()) {
    const ops = ctx.ops.get(s.table_name);
    if (!ops) continue; // the apply loop names the unknown table
    let t = byTable.get(s.table_name);
    if (!t) {
      t = { ops, at: [], binds: [] };
      byTable.set(s.table_name, t);
    }
    t.at.push(i);
    t.binds.push(keyFromJson(ops, s.key_json).bind);
  }
  for (const t of byTable.values()) {
    const rows = t.ops.liveMany(db, t.binds);
    for (const [j, i] of t.at.entries()) out[i] = rows[j];
  }
  return out;
}

/**
 * The replay, in one transaction run in slices (`TxRunner.sliced`): the staged committed rows are
 * read `REPLAY_PAGE_ROWS` at a time and each is matched with its frozen outbox row by key (an
 * index lookup, not a map of the whole bundle). The app's connection sees the bundle only at
 * COMMIT.
 */
async function replay(
  ctx: SyncContext,
  meta: CommittedMeta,
  count: number,
  signal?: AbortSignal,
): Promise<void> {
  const schema = ctx.cfg.schema;
  const tables = new Set<string>();
  const seq = meta.bundleSeq;
  const lastSeen = await ctx.runner.sliced(
    function* (db) {
      if (meta.needsProof) yield* proveCarried(db, seq);
      beginApply(db, ctx.fk, schema);
      const frozenOf = (table: string, keyJson: string) =>
        stmt(
          db,
          `SELECT row_ordinal, table_name, key_json, wire_key_json, op, base_row_version, local_payload
         FROM _sync_outbox_rows WHERE table_name = ? AND key_json = ?`,
        ).get(table, keyJson) as FrozenRow | undefined;
      const progress = { phase: 'push' as const, stage: 'apply' as const, total: count };
      let done = 0;
      ctx.hooks.progress({ ...progress, done });
      for (let after = -1; ; ) {
        // Each staged row comes with its frozen outbox row, row state and dirty row (one query per
        // page instead of three lookups per row: on a long replay each is a call to the apply
        // worker). A key met twice in a page is looked up again (the first one changed them).
        const page = stmt(
          db,
          `SELECT s.row_ordinal, s.schema_name, s.table_name, s.key_json, s.op, s.row_version, s.payload,
             o.row_ordinal AS u_row_ordinal, o.wire_key_json AS u_wire_key_json, o.op AS u_op,
             o.base_row_version AS u_base_row_version, o.local_payload AS u_local_payload,
             rs.row_version AS rs_version, rs.deleted AS rs_deleted,
             d.op AS d_op, d.payload AS d_payload, d.base_row_version AS d_base, d.key_json AS d_key_json
           FROM _sync_push_stage s
           LEFT JOIN _sync_outbox_rows o ON o.rowid = (
             SELECT x.rowid FROM _sync_outbox_rows x WHERE x.table_name = s.table_name AND x.key_json = s.key_json LIMIT 1)
           LEFT JOIN _sync_row_state rs ON rs.schema_name = ? AND rs.table_name = s.table_name AND rs.key_json = s.key_json
           LEFT JOIN _sync_dirty_rows d ON d.schema_name = ? AND d.table_name = s.table_name AND d.key_json = s.key_json
           WHERE s.bundle_seq = ? AND s.row_ordinal > ? ORDER BY s.row_ordinal LIMIT ${REPLAY_PAGE_ROWS}`,
        ).all(schema, schema, seq, after) as StagedReplayRow[];
        if (page.length === 0) break;
        const firstLive = pageLiveRows(ctx, db, page);
        const seenKeys = new Set<string>();
        for (const [i, s] of page.entries()) {
          // a row costs several lookups and writes (on a long replay, calls to the apply worker): a
          // page of them is longer than one slice
          if (i % 10 === 9) yield;
          const ops = ctx.checkRow(s.schema_name, s.table_name);
          tables.add(s.table_name);
          const key = keyFromJson(ops, s.key_json);
          const v = Number(s.row_version);
          const c = {
            op: s.op,
            row_version: v,
            ...(s.payload === null ? {} : { payload: JSON.parse(s.payload) as unknown }),
          };
          const again = seenKeys.size === seenKeys.add(`${s.table_name}\u0000${s.key_json}`).size;
          const u = again ? frozenOf(s.table_name, s.key_json) : frozenFrom(s);
          const rs = again
            ? ops.rowState(db, key.text)
            : s.rs_version === null
              ? undefined
              : { version: Number(s.rs_version), deleted: s.rs_deleted !== 0 };
          if (rs && rs.version >= v) continue; // a newer version was applied already
          const d = again
            ? ops.dirty(db, key.text)
            : s.d_op === null
              ? undefined
              : {
                  op: s.d_op,
                  payload: s.d_payload,
                  base: Number(s.d_base),
                  keyJson: String(s.d_key_json),
                };
          if (!u) {
            // Not a row this push sent (the server's cascade of one it did): applied as a pull
            // applies it (pull.ts#applyBundle). A row edited since the freeze keeps its edit queued
            // and takes the server's version as known, so its push meets the conflict.
            if (d) ops.setRowState(db, key.text, v, c.op === 'DELETE');
            else applyServerRow(db, ops, key, c, !again);
            continue;
          }
          const keyJson = s.key_json;
          if (u.op !== 'DELETE' && c.op === 'DELETE') {
            // The server's own cascade (of another row of this bundle) removed the row we wrote.
            if (d)
              ops.setRowState(db, key.text, v, true); // edited since the freeze: pushed again
            else {
              recordServerCascade(ctx, db, ops, u, v);
              applyServerRow(db, ops, key, c);
            }
            continue;
          }
          // A row waiting in the stash for its parent is still the device's row (an absent live row
          // is looked up again, with the stash).
          const live = (again ? undefined : firstLive?.[i]) ?? ops.localRow(db, key.bind, keyJson);
          if (u.op === 'DELETE') {
            if (live) {
              ops.setRowState(db, key.text, v, true);
              requeueDirty(db, schema, s.table_name, keyJson, JSON.stringify(live), v, true);
            } else {
              applyServerRow(db, ops, key, c);
            }
            continue;
          }
          const localPayload = u.local_payload === null ? null : (JSON.parse(u.local_payload) as unknown);
          if (!live) {
            ops.setRowState(db, key.text, v, false);
            requeueDirty(db, schema, s.table_name, keyJson, null, v, true);
            continue;
          }
          const dirtyMatches =
            d !== undefined &&
            d.op === u.op &&
            d.payload !== null &&
            replayEquivalent(JSON.parse(d.payload) as unknown, localPayload);
          const liveMatches = replayEquivalent(live, localPayload);
          if ((d !== undefined && !dirtyMatches) || !liveMatches) {
            ops.setRowState(db, key.text, v, false);
            requeueDirty(db, schema, s.table_name, keyJson, JSON.stringify(live), v, true);
            continue;
          }
          // No dirty row to delete when the page's read found none for the key (its first row in
          // the page: nothing applied before it in the page writes dirty rows of other keys).
          applyServerRow(db, ops, key, c, d === undefined && !again);
        }
        done += page.length;
        after = Number(page[page.length - 1]?.row_ordinal);
        ctx.hooks.progress({ ...progress, done });
        yield;
      }
      // An uploaded upsert with no committed row: the server inserted it and its own cascade
      // removed it again in the same commit (the net change is nothing). Follow the server.
      // Checked over windows of REPLAY_PAGE_ROWS outbox ordinals (not LIMIT over the matches: when
      // nothing matches, which is the usual case, one such query scans the whole outbox at once).
      const lastOrdinal = Number(
        (
          stmt(
            db,
            `SELECT max(row_ordinal) AS m FROM _sync_outbox_rows WHERE source_bundle_id = (${OUTBOX_SBID})`,
          ).get() as { m: number | null }
        ).m ?? -1,
      );
      for (let after = -1; after < lastOrdinal; after += REPLAY_PAGE_ROWS) {
        const page = stmt(
          db,
          `SELECT o.row_ordinal, o.table_name, o.key_json, o.wire_key_json, o.op, o.base_row_version, o.local_payload
         FROM _sync_outbox_rows o
         WHERE o.source_bundle_id = (${OUTBOX_SBID}) AND o.row_ordinal > ? AND o.row_ordinal <= ?
           AND o.op <> 'DELETE' AND NOT EXISTS (
           SELECT 1 FROM _sync_push_stage s WHERE s.bundle_seq = ? AND s.table_name = o.table_name AND s.key_json = o.key_json)
         ORDER BY o.row_ordinal`,
        ).all(after, after + REPLAY_PAGE_ROWS, seq) as FrozenRow[];
        for (const u of page) {
          const ops = ctx.ops.get(u.table_name);
          if (!ops) continue;
          const key = keyFromJson(ops, u.key_json);
          if (ops.dirty(db, key.text)) continue; // edited since the freeze: pushed again
          recordServerCascade(ctx, db, ops, u, seq);
          ops.delete(db, key.bind);
        }
        yield;
      }
      // the outbox and the stage are emptied in slices before the bookkeeping below
      yield* deleteInSlices(db, '_sync_outbox_rows', ['source_bundle_id', 'row_ordinal']);
      yield* deleteInSlices(db, '_sync_push_stage', ['bundle_seq', 'row_ordinal']);
      const seen = finishReplay(db, meta);
      yield* endApplySliced(db);
      return seen;
    },
    signal,
    count,
  );
  ctx.hooks.applied({
    kind: 'replay',
    tables: [...tables],
    rows: count,
    lastBundleSeqSeen: lastSeen,
  });
}

/** Logs a pushed upsert that the server's cascade removed in the same commit (local edit lost). */
function recordServerCascade(
  ctx: SyncContext,
  db: SqliteDb,
  ops: TableOps,
  u: {
    key_json: string;
    wire_key_json: string;
    op: string;
    base_row_version: number;
    local_payload: string | null;
  },
  version: number,
): void {
  recordConflict(db, {
    schema: ctx.cfg.schema,
    table: ops.m.table,
    keyJson: u.key_json,
    wireKey: JSON.parse(u.wire_key_json) as Record<string, string>,
    reason: 'deleted_by_cascade',
    localOp: u.op,
    localPayload: u.local_payload,
    baseRowVersion: Number(u.base_row_version),
    serverRowVersion: version,
    serverRowDeleted: true,
    serverRow: null,
    resolution: 'accept-server',
    rule: 'server-cascade',
    localLost: true,
  });
}
