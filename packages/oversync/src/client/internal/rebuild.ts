/**
 * Rebuild: replace local state with a server snapshot. Opens a snapshot session (rotating the
 * source for a source recovery), stages its rows page by page, then hands the staged snapshot to
 * snapshot-apply.ts for the atomic swap. The plans the client uses are built here too.
 */
import { ClientError } from '../errors.js';
import type { RebuildReport } from '../types.js';
import { wireKeyToLocal } from './codec.js';
import {
  countRows,
  deleteInSlices,
  markRebuildRequired,
  type OperationState,
  readOutbox,
  reserveReplacementSource,
  stageSnapshotRow,
} from './local-store.js';
import type { SnapshotSession } from './remote.js';
import { applySnapshot, type RebuildPlan } from './snapshot-apply.js';
import { protocolError, type SyncContext, unwrapRetry } from './sync-context.js';
import { keyJsonFromParams } from './table-model.js';
import { serverCodeOf } from './transport.js';

export async function rebuild(
  ctx: SyncContext,
  plan: RebuildPlan,
  signal?: AbortSignal,
): Promise<RebuildReport> {
  const schema = ctx.cfg.schema;
  // The gate first (an interrupted rebuild is resumed), then the stage is emptied in slices.
  await ctx.runner.tx((db) => markRebuildRequired(db), signal);
  await ctx.runner.sliced(
    function* (db) {
      yield* deleteInSlices(db, '_sync_snapshot_stage', ['snapshot_id', 'row_ordinal']);
    },
    signal,
    await ctx.runner.read((db) => countRows(db, '_sync_snapshot_stage'), signal),
  );
  const t = ctx.remote;
  const body: Record<string, unknown> = {};
  if (plan.rotateTo) {
    body.source_replacement = {
      previous_source_id: t.sourceId,
      new_source_id: plan.rotateTo.newSourceId,
      reason: plan.rotateTo.reason,
    };
  }
  let session: SnapshotSession;
  try {
    session = await t.createSnapshotSession(plan.rotateTo ? body : undefined, signal);
  } catch (e) {
    const inner = unwrapRetry(e);
    if (plan.rotateTo && serverCodeOf(inner) === 'source_retired') {
      throw new ClientError(
        'OVERSYNC_CLIENT_SOURCE_REPLACEMENT_DIVERGED',
        'server names a different replacement source',
        {
          cause: inner,
          details: { reserved: plan.rotateTo.newSourceId },
        },
      );
    }
    throw e;
  }
  if (
    session.snapshot_bundle_seq < 0 ||
    session.row_count < 0 ||
    (session.row_count > 0 && session.snapshot_bundle_seq <= 0) ||
    !session.expires_at
  ) {
    throw protocolError('snapshot session answer is malformed');
  }
  const sid = session.snapshot_id;
  try {
    let after = 0;
    const download = { phase: plan.phase, stage: 'download' as const, total: session.row_count };
    ctx.hooks.progress({ ...download, done: 0 });
    const fetchChunk = (from: number) =>
      t.snapshotChunk(sid, { afterRowOrdinal: from, maxRows: ctx.cfg.snapshotChunkRows }, signal);
    let pending = fetchChunk(0);
    for (;;) {
      const chunk = await pending;
      const rows = chunk.rows ?? [];
      if (
        chunk.snapshot_id !== sid ||
        chunk.snapshot_bundle_seq !== session.snapshot_bundle_seq ||
        chunk.next_row_ordinal !== after + rows.length ||
        (chunk.has_more && rows.length === 0)
      ) {
        throw protocolError('snapshot chunk does not continue the session');
      }
      if (chunk.has_more) {
        // Fetch the next page while this one is staged (server time overlaps local writes).
        pending = fetchChunk(after + rows.length);
        pending.catch(() => undefined);
      }
      const base = after;
      // One transaction per page, in slices (a 5,000-row page is longer than one event-loop turn).
      await ctx.runner.sliced(
        function* (db) {
          for (let i = 0; i < rows.length; i++) {
            const r = rows[i] as (typeof rows)[number];
            const ops = ctx.checkRow(r.schema, r.table);
            if (r.row_version <= 0 || r.payload === null || typeof r.payload !== 'object') {
              throw protocolError('snapshot row is malformed');
            }
            const key = wireKeyToLocal(ops.m, r.key);
            stageSnapshotRow(db, ops.m, keyJsonFromParams(ops.m), {
              snapshotId: sid,
              ordinal: base + i + 1,
              schema,
              keyText: key.text,
              version: r.row_version,
              payload: JSON.stringify(r.payload),
            });
            if (i % 50 === 49) yield;
          }
        },
        signal,
        rows.length,
      );
      after += rows.length;
      ctx.hooks.progress({ ...download, done: after });
      if (!chunk.has_more) break;
    }
    if (after !== session.row_count) {
      throw protocolError('snapshot row count does not match the session', {
        expected: session.row_count,
        got: after,
      });
    }
    const rotated = await applySnapshot(
      ctx,
      plan,
      sid,
      session.snapshot_bundle_seq,
      session.row_count,
      signal,
    );
    if (rotated) ctx.hooks.sourceChanged(rotated);
    return {
      outcome: 'applied_snapshot',
      restore: { bundleSeq: session.snapshot_bundle_seq, rowCount: session.row_count },
      ...(rotated ? { rotatedSourceId: rotated } : {}),
    };
  } finally {
    t.dropSnapshotSession(sid);
  }
}

/**
 * Keep-source rebuild that loses nothing: a committed outbox is dropped (the snapshot holds it)
 * and the source floor moves past it; an uncommitted outbox and dirty rows are carried over.
 */
export async function keepSourceRebuild(
  ctx: SyncContext,
  phase: 'hydrate' | 'recover',
  signal?: AbortSignal,
): Promise<RebuildReport> {
  const outbox = await ctx.runner.read((db) => readOutbox(db), signal);
  if (outbox.state === 'committed_remote') {
    return rebuild(
      ctx,
      {
        phase,
        preserve: 'rebase',
        dropCommittedOutbox: true,
        advanceSourceFloor: outbox.sourceBundleId + 1,
      },
      signal,
    );
  }
  return rebuild(ctx, { phase, preserve: 'keep-base' }, signal);
}

/** Source recovery: rebuild under a fresh source id (reserved durably before the first request). */
export async function recoverSource(
  ctx: SyncContext,
  op: OperationState,
  signal?: AbortSignal,
): Promise<RebuildReport> {
  let next = op.replacementSourceId;
  if (!next) {
    next = await ctx.runner.tx((db) => reserveReplacementSource(db, ctx.remote.sourceId, op.reason), signal);
  }
  return rebuild(
    ctx,
    {
      phase: 'recover',
      preserve: 'keep-base',
      rotateTo: { newSourceId: next, reason: op.reason },
      clearOperation: true,
    },
    signal,
  );
}
