/**
 * Snapshot apply, the atomic swap of a rebuild: in one transaction wipe the managed tables, load
 * the staged snapshot (set-based where every column converts inside SQLite), carry the local
 * intents over (or log them as discarded for a remote replace), rotate the source if asked, and
 * move the checkpoint to the snapshot's sequence.
 *
 * The transaction runs in slices (`TxRunner.sliced`): the stage is applied and dropped
 * `APPLY_SLICE_ROWS` ordinals at a time, wipes delete in slices too, and the event loop gets a
 * turn between slices while the app's connection keeps seeing the previous state until COMMIT.
 */
import { ClientError } from '../errors.js';
import type { ProgressPhase } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { type LocalPayload, localKeyToWire } from './codec.js';
import { recordConflict } from './conflict-log.js';
import { quoteIdent } from './local-schema.js';
import {
  beginApply,
  clearForSnapshot,
  clearSnapshotStage,
  deleteInSlices,
  dropStagedRange,
  endApplySliced,
  finishSnapshot,
  listDirtyIntents,
  listOutboxIntents,
  managedTables,
  raiseSourceFloor,
  readAttachment,
  readFrozenRows,
  readOutbox,
  requeueDirty,
  rotateSource,
  rowVersionOf,
  setOperation,
  setRowStateLive,
  stagedRange,
  trackForeignKeys,
} from './local-store.js';
import { protocolError, type SyncContext } from './sync-context.js';

/** Staged ordinals applied per slice of the snapshot apply. */
export const APPLY_SLICE_ROWS = 1000;

export type PreserveMode = 'none' | 'keep-base' | 'rebase';

export interface RebuildPlan {
  phase: ProgressPhase;
  /** Rotate to this source id (source recovery). */
  rotateTo?: { newSourceId: string; reason: string };
  /** What happens to local intents (dirty rows and an uncommitted outbox). */
  preserve: PreserveMode;
  /** The outbox is committed remotely: drop it instead of preserving it. */
  dropCommittedOutbox?: boolean;
  advanceSourceFloor?: number;
  clearOperation?: boolean;
  /** Bind this user as attached during the apply (remote replace). */
  bindUser?: string;
}

/**
 * A remote replace drops the local intents that were never pushed (the scope already has its
 * data). Each is written to the conflict log first, so nothing acknowledged vanishes unrecorded.
 */
function recordDiscarded(ctx: SyncContext, db: SqliteDb): void {
  const schema = ctx.cfg.schema;
  const ob = readOutbox(db);
  const rows = [...(ob.state === 'prepared' ? listOutboxIntents(db) : []), ...listDirtyIntents(db, schema)];
  for (const r of rows) {
    const ops = ctx.ops.get(String(r.table_name));
    if (!ops) continue;
    const payload = (r.payload as string | null) ?? null;
    if (payload === null && String(r.op) !== 'DELETE') continue;
    recordConflict(db, {
      schema,
      table: ops.m.table,
      keyJson: String(r.key_json),
      wireKey: localKeyToWire(ops.m, JSON.parse(String(r.key_json)) as Record<string, unknown>),
      reason: 'discarded_by_remote_state',
      localOp: payload === null ? 'DELETE' : String(r.op) === 'UPDATE' ? 'UPDATE' : 'INSERT',
      localPayload: payload,
      baseRowVersion: Number(r.base_row_version),
      serverRowVersion: 0,
      serverRowDeleted: false,
      serverRow: null,
      resolution: 'accept-server',
      rule: 'remote-state',
      localLost: true,
    });
  }
}

/** The atomic swap: wipe managed tables, load the staged snapshot, restore local intents. */
export async function applySnapshot(
  ctx: SyncContext,
  plan: RebuildPlan,
  sid: string,
  bundleSeq: number,
  rowCount: number,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const schema = ctx.cfg.schema;
  let rotated: string | undefined;
  const tables = ctx.models.map((m) => m.table);
  await ctx.runner.sliced(
    function* (db) {
      const att = readAttachment(db);
      if (att.bindingState !== 'attached' && !plan.bindUser) {
        throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', 'snapshot apply needs an attached binding');
      }
      beginApply(db);
      // Local intents to carry over: an uncommitted outbox first, newer dirty rows over it.
      type Intent = { table: string; keyJson: string; base: number; payload: string | null };
      const intents = new Map<string, Intent>();
      if (plan.preserve !== 'none') {
        const ob = readOutbox(db);
        if (!(ob.state === 'committed_remote' || plan.dropCommittedOutbox)) {
          for (const r of readFrozenRows(db)) {
            intents.set(`${r.table_name}\u0000${r.key_json}`, {
              table: String(r.table_name),
              keyJson: String(r.key_json),
              base: Number(r.base_row_version),
              payload: (r.local_payload as string | null) ?? null,
            });
          }
        }
        for (const r of listDirtyIntents(db)) {
          const k = `${r.table_name}\u0000${r.key_json}`;
          const prev = intents.get(k);
          intents.set(k, {
            table: String(r.table_name),
            keyJson: String(r.key_json),
            base: prev ? prev.base : Number(r.base_row_version),
            payload: (r.payload as string | null) ?? null,
          });
        }
      }
      const managed = managedTables(db, schema);
      for (const t of new Set([...managed.filter((x) => ctx.ops.has(x)), ...tables])) {
        const ops = ctx.ops.get(t);
        // the table's rows go in slices (its capture triggers rule out SQLite's fast truncate)
        if (ops)
          yield* deleteInSlices(
            db,
            t,
            ops.m.keyColumns.map((c) => c.name),
          );
        else db.exec(`DELETE FROM ${quoteIdent(t)}`);
      }
      if (plan.preserve === 'none') recordDiscarded(ctx, db);
      yield* clearForSnapshot(db, schema);
      let n = 0;
      // Tables whose columns all convert inside SQLite are applied set-based (one INSERT … SELECT
      // per slice of ordinals); the others row by row. Each slice of the stage is dropped once
      // applied, so the stage never needs one long DELETE.
      const setBased = [...ctx.ops.values()].filter((o) => o.setBased);
      const skip = setBased.map((o) => o.m.table);
      const apply = { phase: plan.phase, stage: 'apply' as const, total: rowCount };
      ctx.hooks.progress({ ...apply, done: 0 });
      for (let after = 0; after < rowCount; after += APPLY_SLICE_ROWS) {
        const to = after + APPLY_SLICE_ROWS;
        for (const o of setBased) n += o.applyStagedSet(db, sid, after, to);
        for (const [i, r] of stagedRange(db, sid, after, to, skip).entries()) {
          if (i % 50 === 49) yield; // row by row, 1,000 rows are longer than one slice
          ctx.tableOps(r.table_name).upsertWire(db, JSON.parse(r.payload) as unknown);
          setRowStateLive(db, schema, r.table_name, r.key_json, r.row_version);
          n++;
        }
        dropStagedRange(db, sid, after, to);
        ctx.hooks.progress({ ...apply, done: n });
        yield;
      }
      if (n !== rowCount)
        throw protocolError('staged snapshot row count does not match', { expected: rowCount, got: n });
      // Re-apply the carried-over intents locally and queue them again; an intent whose parent is
      // not in the snapshot waits in the stash (its push then gets a foreign_key conflict).
      trackForeignKeys(db, ctx.fk, schema);
      for (const i of intents.values()) {
        const ops = ctx.ops.get(i.table);
        if (!ops) continue;
        const keyObj = JSON.parse(i.keyJson) as Record<string, unknown>;
        const bind = ops.m.keyColumns.map((c) =>
          c.isBlob ? Buffer.from(String(keyObj[c.key]), 'hex') : (keyObj[c.key] as unknown),
        );
        if (i.payload === null) ops.delete(db, bind);
        else ops.upsertLocal(db, JSON.parse(i.payload) as LocalPayload);
        const rs = rowVersionOf(db, schema, i.table, i.keyJson);
        const base = plan.preserve === 'rebase' ? (rs ?? 0) : i.base;
        if (i.payload === null && rs === undefined && plan.preserve === 'rebase') continue;
        requeueDirty(db, schema, i.table, i.keyJson, i.payload, base, true);
      }
      let sourceId = att.currentSourceId;
      if (plan.rotateTo) {
        const next = plan.rotateTo.newSourceId;
        rotateSource(db, sourceId, next);
        sourceId = next;
        rotated = next;
      }
      finishSnapshot(db, { sourceId, bundleSeq, bindUser: plan.bindUser });
      if (plan.advanceSourceFloor) raiseSourceFloor(db, sourceId, plan.advanceSourceFloor);
      if (plan.clearOperation) setOperation(db, { kind: 'none' });
      clearSnapshotStage(db);
      yield* endApplySliced(db);
    },
    signal,
    rowCount,
  );
  ctx.hooks.applied({ kind: 'snapshot', tables, rows: rowCount, lastBundleSeqSeen: bundleSeq });
  return rotated;
}
