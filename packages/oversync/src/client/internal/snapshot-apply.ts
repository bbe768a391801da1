/**
 * Snapshot apply, the atomic swap of a rebuild: in one transaction wipe the managed tables, load
 * the snapshot's rows (set-based where every column converts inside SQLite), carry the local
 * intents over (or log them as discarded for a remote replace), rotate the source if asked, and
 * move the checkpoint to the snapshot's sequence.
 *
 * Two callers share these pieces (`beginSwap`, `applySnapshotRows`, `finishSwap`): the staged
 * path (`applySnapshot`: the rows were staged page by page in `_sync_snapshot_stage` first), and
 * the stage-free hydrate of rebuild.ts (each page is applied as it arrives, inside the same one
 * transaction). The transaction runs in slices (`TxRunner.sliced`): rows are applied
 * `APPLY_SLICE_ROWS` at a time, wipes delete in slices too, and the event loop gets a turn
 * between slices while the app's connection keeps seeing the previous state until COMMIT.
 */
import { ClientError } from '../errors.js';
import type { ProgressPhase } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { WorkerConnection } from './apply-worker.js';
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
  stagedSource,
  stagedTables,
  trackForeignKeys,
} from './local-store.js';
import { stmt } from './statements.js';
import { protocolError, type SyncContext } from './sync-context.js';
import { createTriggers, dropTriggers } from './table-model.js';
import type { RowSource } from './table-ops.js';

/**
 * Rows applied per statement (set-based) or per batch (row by row) of the snapshot apply: staged
 * ordinals per slice, or rows of one table of a page of a stage-free hydrate. A set-based
 * statement of 1,000 rows with their row state runs in a few milliseconds (under
 * `SLICE_BUDGET_MS` on this thread; on the worker's connection the event loop waits that long).
 */
export const APPLY_SLICE_ROWS = 1000;
/**
 * Rows of one table of a page applied per batch on the apply connection a worker owns. Its
 * statements run in the worker while the event loop turns (see `runWrites` in table-ops.ts), so a
 * batch need not fit a slice, and fewer, larger requests leave the worker less time waiting for
 * this thread between them. Not a whole page (5,000 rows): at 1M rows that raised the RSS growth
 * of the hydrate to 154 MB (102 MB with 1,000-row batches).
 */
export const WORKER_BATCH_ROWS = 2500;

/** Rows per batch of snapshot rows on `db` (see `APPLY_SLICE_ROWS`, `WORKER_BATCH_ROWS`). */
export function applyBatchRows(db: SqliteDb): number {
  return db instanceof WorkerConnection ? WORKER_BATCH_ROWS : APPLY_SLICE_ROWS;
}

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

/** What `beginSwap` found, for `finishSwap`. */
export interface SwapState {
  sourceId: string;
  intents: Map<string, { table: string; keyJson: string; base: number; payload: string | null }>;
}

/**
 * The swap's first part, inside the transaction: checks the binding, enters apply mode, reads the
 * local intents to carry over, wipes the managed tables and the sync state.
 */
export function* beginSwap(
  ctx: SyncContext,
  db: SqliteDb,
  plan: RebuildPlan,
): Generator<void, SwapState, unknown> {
  const schema = ctx.cfg.schema;
  const att = readAttachment(db);
  if (att.bindingState !== 'attached' && !plan.bindUser) {
    throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', 'snapshot apply needs an attached binding');
  }
  beginApply(db);
  // The managed tables' triggers go for the swap and come back with it (`finishSwap`), in the
  // same transaction: in apply mode they do nothing, yet each one's WHEN clause ran its query for
  // every row the wipe deleted and the snapshot inserted (≈ 1-2 µs a row of the apply). Nobody
  // else writes meanwhile (this transaction holds the write lock); readers see the schema change
  // with the data, at COMMIT, and a rollback brings the triggers back with everything else.
  for (const m of ctx.models) dropTriggers(db, m.table);
  // Local intents to carry over: an uncommitted outbox first, newer dirty rows over it.
  const intents: SwapState['intents'] = new Map();
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
  for (const t of new Set([...managed.filter((x) => ctx.ops.has(x)), ...ctx.models.map((m) => m.table)])) {
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
  return { sourceId: att.currentSourceId, intents };
}

/**
 * Applies one batch of snapshot rows of `table` (the one piece of row-apply code of both paths):
 * one INSERT … SELECT when every column converts inside SQLite (`TableOps.setBased`), else row by
 * row through the codec (the rows are read back from `src` as JSON text: for a page that is a
 * round trip through SQLite, kept so both paths apply rows with the same code). Returns the rows
 * applied.
 */
export function* applySnapshotRows(
  ctx: SyncContext,
  db: SqliteDb,
  table: string,
  src: RowSource,
): Generator<unknown, number, unknown> {
  const ops = ctx.tableOps(table);
  if (ops.setBased) return yield* ops.applySet(db, src);
  const rows = stmt(db, `SELECT key_json, row_version, payload FROM (${src.sql})`).all(
    ...src.params,
  ) as Array<{
    key_json: string;
    row_version: number;
    payload: string;
  }>;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i] as (typeof rows)[number];
    ops.upsertWire(db, JSON.parse(r.payload) as unknown);
    setRowStateLive(db, ctx.cfg.schema, table, r.key_json, r.row_version);
    if (i % 50 === 49) yield; // row by row, 1,000 rows are longer than one slice
  }
  return rows.length;
}

/**
 * The swap's last part: re-applies the carried-over intents, rotates the source if asked, moves
 * the checkpoint, leaves apply mode. Returns the rotated source id, if any.
 */
export function* finishSwap(
  ctx: SyncContext,
  db: SqliteDb,
  plan: RebuildPlan,
  state: SwapState,
  bundleSeq: number,
): Generator<void, string | undefined, unknown> {
  const schema = ctx.cfg.schema;
  // Re-apply the carried-over intents locally and queue them again; an intent whose parent is
  // not in the snapshot waits in the stash (its push then gets a foreign_key conflict).
  trackForeignKeys(db, ctx.fk, schema);
  for (const i of state.intents.values()) {
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
  let sourceId = state.sourceId;
  let rotated: string | undefined;
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
  for (const m of ctx.models) createTriggers(db, m, schema);
  return rotated;
}

/** The staged path's swap: wipe managed tables, load the staged snapshot, restore local intents. */
export async function applySnapshot(
  ctx: SyncContext,
  plan: RebuildPlan,
  sid: string,
  bundleSeq: number,
  rowCount: number,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const rotated = await ctx.runner.sliced(
    function* (db) {
      const state = yield* beginSwap(ctx, db, plan);
      let n = 0;
      const apply = { phase: plan.phase, stage: 'apply' as const, total: rowCount };
      ctx.hooks.progress({ ...apply, done: 0 });
      // APPLY_SLICE_ROWS ordinals at a time, each table's rows of the slice in one batch; each
      // slice of the stage is dropped once applied, so the stage never needs one long DELETE.
      for (let after = 0; after < rowCount; after += APPLY_SLICE_ROWS) {
        const to = after + APPLY_SLICE_ROWS;
        for (const t of stagedTables(db, sid, after, to)) {
          n += yield* applySnapshotRows(ctx, db, t, stagedSource(sid, after, to, t));
        }
        dropStagedRange(db, sid, after, to);
        ctx.hooks.progress({ ...apply, done: n });
        yield;
      }
      if (n !== rowCount)
        throw protocolError('staged snapshot row count does not match', { expected: rowCount, got: n });
      return yield* finishSwap(ctx, db, plan, state, bundleSeq);
    },
    signal,
    rowCount,
  );
  snapshotApplied(ctx, rowCount, bundleSeq);
  return rotated;
}

/** Tells the client a snapshot was applied (after COMMIT). */
export function snapshotApplied(ctx: SyncContext, rows: number, bundleSeq: number): void {
  ctx.hooks.applied({
    kind: 'snapshot',
    tables: ctx.models.map((m) => m.table),
    rows,
    lastBundleSeqSeen: bundleSeq,
  });
}
