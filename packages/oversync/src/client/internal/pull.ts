/** Pull: download the bundles committed by others and apply them, one transaction per bundle. */
import type { BundleRow } from '../../shared/wire.js';
import type { PullReport } from '../types.js';
import { wireKeyToLocal } from './codec.js';
import { advanceCheckpoint, beginApply, endApply } from './local-store.js';
import { rebuild } from './rebuild.js';
import type { PullAnswer } from './remote.js';
import { protocolError, type SyncContext, unwrapRetry, WIRE_OPS } from './sync-context.js';
import { applyServerRow } from './table-ops.js';
import { serverCodeOf } from './transport.js';

/**
 * Pulls bundles after the checkpoint `from` (read by the caller with its other checks) up to the
 * stable sequence the server names on the first page; each bundle is applied in its own
 * transaction. Pruned history falls back to a snapshot rebuild that keeps local edits.
 */
export async function pullToStable(
  ctx: SyncContext,
  from: number,
  signal?: AbortSignal,
): Promise<PullReport> {
  let after = from;
  let stable: number | undefined;
  let bundlesApplied = 0;
  let rowsApplied = 0;
  // Rows done / rows of the pages fetched so far (the server does not announce a pull's total).
  let rowsSeen = 0;
  let rowsDone = 0;
  for (;;) {
    let res: PullAnswer;
    try {
      res = await ctx.remote.pull(
        { afterBundleSeq: after, maxBundles: ctx.cfg.downloadLimit, targetBundleSeq: stable },
        signal,
      );
    } catch (e) {
      const inner = unwrapRetry(e);
      if (serverCodeOf(inner) === 'history_pruned') {
        const r = await rebuild(ctx, { phase: 'recover', preserve: 'keep-base' }, signal);
        return {
          outcome: 'applied_snapshot',
          bundlesApplied,
          rowsApplied: rowsApplied + (r.restore?.rowCount ?? 0),
          lastBundleSeqSeen: r.restore?.bundleSeq ?? after,
          ...(r.restore ? { restore: r.restore } : {}),
        };
      }
      throw e;
    }
    const s = res.stable_bundle_seq;
    const bundles = res.bundles ?? [];
    if (s < 0 || s < after) throw protocolError('pull: stable_bundle_seq is behind the checkpoint');
    if (stable !== undefined && s !== stable)
      throw protocolError('pull: stable_bundle_seq changed between pages');
    if (bundles.length > 0 && s <= 0) throw protocolError('pull: bundles without a stable sequence');
    stable = s;
    let prev = after;
    for (const b of bundles) {
      if (b.bundle_seq <= prev || b.bundle_seq > s || !b.source_id || b.source_bundle_id <= 0) {
        throw protocolError('pull: bundle sequence out of order or malformed', { bundleSeq: b.bundle_seq });
      }
      prev = b.bundle_seq;
      for (const r of b.rows ?? []) {
        if (r.row_version <= 0 || !WIRE_OPS.has(r.op) || (r.op !== 'DELETE' && r.payload === undefined)) {
          throw protocolError('pull: malformed bundle row', { bundleSeq: b.bundle_seq });
        }
      }
    }
    for (const b of bundles) rowsSeen += (b.rows ?? []).length;
    for (const b of bundles) {
      const n = await applyBundle(ctx, b.bundle_seq, b.rows ?? [], signal);
      after = b.bundle_seq;
      bundlesApplied++;
      rowsApplied += n;
      rowsDone += (b.rows ?? []).length;
      ctx.hooks.progress({ phase: 'pull', done: rowsDone, total: rowsSeen });
    }
    if (after >= s) break;
    if (!res.has_more) throw protocolError('pull ended early', { after, stable: s });
  }
  return {
    outcome: bundlesApplied > 0 ? 'applied_incremental' : 'already_at_target',
    bundlesApplied,
    rowsApplied,
    lastBundleSeqSeen: after,
  };
}

/** Applies one bundle in its own transaction; the checkpoint moves in the same transaction. */
async function applyBundle(
  ctx: SyncContext,
  bundleSeq: number,
  rows: readonly BundleRow[],
  signal?: AbortSignal,
): Promise<number> {
  const tables = new Set<string>();
  let applied = 0;
  await ctx.runner.tx((db) => {
    beginApply(db, ctx.fk, ctx.cfg.schema);
    for (const r of rows) {
      const ops = ctx.checkRow(r.schema, r.table);
      const key = wireKeyToLocal(ops.m, r.key);
      const rs = ops.rowState(db, key.text);
      if (rs && rs.version >= r.row_version) continue;
      tables.add(r.table);
      applied++;
      if (ops.dirty(db, key.text)) {
        // A local edit is pending for this row: keep it (and its base version, so the push
        // detects the conflict and the resolver decides); record the server's version.
        ops.setRowState(db, key.text, r.row_version, r.op === 'DELETE');
        continue;
      }
      applyServerRow(db, ops, key, r);
    }
    advanceCheckpoint(db, bundleSeq);
    endApply(db);
  }, signal);
  ctx.hooks.applied({ kind: 'pull', tables: [...tables], rows: applied, lastBundleSeqSeen: bundleSeq });
  return applied;
}
