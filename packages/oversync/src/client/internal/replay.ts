/**
 * Replay: fetch the committed rows of our own pushed bundle, check their count and hash, and write
 * them back as authoritative, keeping every local edit made since the freeze (re-queued on top of
 * the committed version). An `already_committed` answer must first prove it carries our intents.
 */
import { computeBundleHash } from '../../shared/bundle-hash.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import type { BundleRow } from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import type { SqliteDb } from '../writer-types.js';
import { replayEquivalent, wireKeyToLocal } from './codec.js';
import { recordConflict } from './conflict-log.js';
import {
  beginApply,
  endApply,
  finishReplay,
  type OutboxState,
  readFrozenRows,
  requeueDirty,
} from './local-store.js';
import { protocolError, type SyncContext, WIRE_OPS } from './sync-context.js';
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

/** Fetches the committed rows of our bundle, verifies count and hash, and replays them. */
export async function fetchAndReplay(
  ctx: SyncContext,
  meta: CommittedMeta,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<number> {
  const rows: BundleRow[] = [];
  let after = -1;
  let expectedCount = meta.rowCount;
  for (;;) {
    const page = await ctx.remote.committedBundleRows(
      meta.bundleSeq,
      { maxRows: ctx.cfg.downloadLimit, afterRowOrdinal: after >= 0 ? after : undefined },
      signal,
    );
    const pr = page.rows ?? [];
    if (
      page.bundle_seq !== meta.bundleSeq ||
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
    for (const r of pr) {
      if (r.row_version <= 0 || !WIRE_OPS.has(r.op) || (r.op !== 'DELETE' && r.payload === undefined)) {
        throw protocolError('committed bundle row is malformed');
      }
      rows.push(r);
    }
    after += pr.length;
    if (!page.has_more) break;
  }
  if (rows.length !== expectedCount) {
    throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'committed bundle row count does not match', {
      details: { expected: expectedCount, got: rows.length },
    });
  }
  const hash = computeBundleHash(rows).hex;
  if (hash !== meta.bundleHash) {
    throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'staged committed bundle hash does not match', {
      details: { expected: meta.bundleHash, computed: hash, bundleSeq: meta.bundleSeq },
    });
  }
  await replay(ctx, meta, rows, signal);
  return rows.length;
}

async function replay(
  ctx: SyncContext,
  meta: CommittedMeta,
  rows: readonly BundleRow[],
  signal?: AbortSignal,
): Promise<void> {
  const schema = ctx.cfg.schema;
  const tables = new Set<string>();
  let lastSeen = 0;
  await ctx.runner.tx((db) => {
    const outboxRows = readFrozenRows(db);
    const byKey = new Map(outboxRows.map((r) => [`${r.table_name}\u0000${r.wire_key_json}`, r]));
    if (meta.needsProof) {
      // `already_committed`: prove the committed bundle carries the frozen intents (same table,
      // key and op; extra server-side rows allowed, and an upsert the server's own cascade
      // removed in the same commit may be missing or a DELETE). A different bundle under our
      // source tuple means this database was restored from an older copy: replace the source.
      const committed = new Map(rows.map((r) => [`${r.table}\u0000${canonicalJson(r.key)}`, r.op]));
      let exact = 0;
      for (const [k, r] of byKey) {
        const got = committed.get(k);
        if (got === r.op) exact++;
        if (got !== r.op && !(r.op !== 'DELETE' && (got === undefined || got === 'DELETE'))) {
          throw new ClientError(
            'OVERSYNC_CLIENT_PROTOCOL',
            'already committed bundle does not carry the frozen outbox',
            {
              details: { bundleSeq: meta.bundleSeq, reason: 'already_committed_mismatch' },
            },
          );
        }
      }
      if (exact === 0 && byKey.size > 0) {
        throw new ClientError(
          'OVERSYNC_CLIENT_PROTOCOL',
          'already committed bundle does not carry the frozen outbox',
          {
            details: { bundleSeq: meta.bundleSeq, reason: 'already_committed_mismatch' },
          },
        );
      }
    }
    beginApply(db, ctx.fk, schema);
    const matched = new Set<string>();
    for (const c of rows) {
      const ops = ctx.checkRow(c.schema, c.table);
      tables.add(c.table);
      const key = wireKeyToLocal(ops.m, c.key);
      const v = c.row_version;
      const uKey = `${c.table}\u0000${canonicalJson(c.key)}`;
      const u = byKey.get(uKey);
      if (u) matched.add(uKey);
      const rs = ops.rowState(db, key.text);
      if (rs && rs.version >= v) continue; // a newer version was applied already
      if (!u) {
        applyServerRow(db, ops, key, c);
        continue;
      }
      const d = ops.dirty(db, key.text);
      const keyJson = ops.keyJson(db, key.text);
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
      // A row waiting in the stash for its parent is still the device's row.
      const live = ops.localRow(db, key.bind, keyJson);
      if (u.op === 'DELETE') {
        if (live) {
          ops.setRowState(db, key.text, v, true);
          requeueDirty(db, schema, c.table, keyJson, JSON.stringify(live), v, true);
        } else {
          applyServerRow(db, ops, key, c);
        }
        continue;
      }
      const localPayload = u.local_payload === null ? null : (JSON.parse(u.local_payload) as unknown);
      if (!live) {
        ops.setRowState(db, key.text, v, false);
        requeueDirty(db, schema, c.table, keyJson, null, v, true);
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
        requeueDirty(db, schema, c.table, keyJson, JSON.stringify(live), v, true);
        continue;
      }
      applyServerRow(db, ops, key, c);
    }
    // An uploaded upsert with no committed row: the server inserted it and its own cascade
    // removed it again in the same commit (the net change is nothing). Follow the server.
    for (const [k, u] of byKey) {
      if (matched.has(k) || u.op === 'DELETE') continue;
      const ops = ctx.ops.get(u.table_name);
      if (!ops) continue;
      const key = wireKeyToLocal(ops.m, JSON.parse(u.wire_key_json) as Record<string, unknown>);
      if (ops.dirty(db, key.text)) continue; // edited since the freeze: pushed again
      recordServerCascade(ctx, db, ops, u, meta.bundleSeq);
      ops.delete(db, key.bind);
    }
    lastSeen = finishReplay(db, meta);
    endApply(db);
  }, signal);
  ctx.hooks.applied({
    kind: 'replay',
    tables: [...tables],
    rows: rows.length,
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
