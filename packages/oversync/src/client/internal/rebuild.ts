/**
 * Rebuild: replace local state with a server snapshot. Opens a snapshot session (rotating the
 * source for a source recovery) and swaps the snapshot in atomically: on a database file in WAL
 * mode each page is applied as it arrives inside one long transaction (stage-free); elsewhere the
 * pages are staged first and snapshot-apply.ts swaps the staged snapshot in. The plans the client
 * uses are built here too.
 */
import { ClientError } from '../errors.js';
import type { RebuildReport } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
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
import type { SnapshotChunk, SnapshotSession } from './remote.js';
import {
  applyBatchRows,
  applySnapshot,
  applySnapshotRows,
  beginSwap,
  finishSwap,
  type RebuildPlan,
  snapshotApplied,
} from './snapshot-apply.js';
import { protocolError, type SyncContext, unwrapRetry } from './sync-context.js';
import { keyJsonFromParams } from './table-model.js';
import type { TableOps } from './table-ops.js';
import { serverCodeOf } from './transport.js';
import { NoApplyConnection } from './writer.js';

export async function rebuild(
  ctx: SyncContext,
  plan: RebuildPlan,
  signal?: AbortSignal,
): Promise<RebuildReport> {
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
    const pages = new PageReader(ctx, session, plan, signal);
    let rotated: string | undefined;
    try {
      rotated = await hydrateStageFree(ctx, plan, session, pages, signal);
    } catch (e) {
      // This database cannot run a transaction that waits (coordinator, in-memory, not WAL):
      // stage the pages first, then swap (nothing of the download was read yet).
      if (!(e instanceof NoApplyConnection)) throw e;
      rotated = await hydrateStaged(ctx, plan, session, pages, signal);
    }
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

type SnapshotRow = NonNullable<SnapshotChunk['rows']>[number];

/**
 * The pages of a snapshot session in order, the next one fetched while the current one is applied
 * or staged (server time overlaps local writes). Checks that each chunk continues the session and
 * that the rows add up to the session's count; reports the 'download' progress.
 */
class PageReader {
  readonly #ctx: SyncContext;
  readonly #session: SnapshotSession;
  readonly #signal: AbortSignal | undefined;
  readonly #progress: { phase: RebuildPlan['phase']; stage: 'download'; total: number };
  #pending: Promise<SnapshotChunk>;
  #after = 0;
  #done = false;

  constructor(
    ctx: SyncContext,
    session: SnapshotSession,
    plan: RebuildPlan,
    signal: AbortSignal | undefined,
  ) {
    this.#ctx = ctx;
    this.#session = session;
    this.#signal = signal;
    this.#progress = { phase: plan.phase, stage: 'download', total: session.row_count };
    ctx.hooks.progress({ ...this.#progress, done: 0 });
    this.#pending = this.#fetch(0);
  }

  #fetch(from: number): Promise<SnapshotChunk> {
    const p = this.#ctx.remote.snapshotChunk(
      this.#session.snapshot_id,
      { afterRowOrdinal: from, maxRows: this.#ctx.cfg.snapshotChunkRows },
      this.#signal,
    );
    p.catch(() => undefined); // awaited by `next`, or dropped after a failure elsewhere
    return p;
  }

  /** Rows fetched so far. */
  get fetched(): number {
    return this.#after;
  }

  /** The next page's rows, or undefined after the last one (the row count is checked then). */
  async next(): Promise<SnapshotRow[] | undefined> {
    if (this.#done) {
      if (this.#after !== this.#session.row_count) {
        throw protocolError('snapshot row count does not match the session', {
          expected: this.#session.row_count,
          got: this.#after,
        });
      }
      return undefined;
    }
    const chunk = await this.#pending;
    const rows = chunk.rows ?? [];
    if (
      chunk.snapshot_id !== this.#session.snapshot_id ||
      chunk.snapshot_bundle_seq !== this.#session.snapshot_bundle_seq ||
      chunk.next_row_ordinal !== this.#after + rows.length ||
      (chunk.has_more && rows.length === 0)
    ) {
      throw protocolError('snapshot chunk does not continue the session');
    }
    this.#after += rows.length;
    if (chunk.has_more) this.#pending = this.#fetch(this.#after);
    else this.#done = true;
    this.#ctx.hooks.progress({ ...this.#progress, done: this.#after });
    return rows;
  }
}

/** Checks one snapshot row (known table, positive version, object payload) and converts its key. */
function checkSnapshotRow(ctx: SyncContext, r: SnapshotRow): { ops: TableOps; keyText: string[] } {
  const ops = ctx.checkRow(r.schema, r.table);
  if (r.row_version <= 0 || r.payload === null || typeof r.payload !== 'object' || Array.isArray(r.payload)) {
    throw protocolError('snapshot row is malformed');
  }
  return { ops, keyText: wireKeyToLocal(ops.m, r.key).text };
}

/**
 * A batch of a stage-free hydrate still running in the apply worker: the step that waits for it
 * (`TableOps.startSet`), if any.
 */
interface InFlight {
  finish?: (() => Generator<unknown, number, unknown>) | undefined;
}

/** Waits for the batch in flight, if any; returns its rows. */
function* settle(inFlight: InFlight): Generator<unknown, number, unknown> {
  const finish = inFlight.finish;
  if (!finish) return 0;
  inFlight.finish = undefined;
  return yield* finish();
}

/**
 * Applies one page of a stage-free hydrate: its rows are grouped by table and applied
 * `applyBatchRows` at a time through `applySnapshotRows` (the row-apply code of the staged
 * path too), each batch handed to SQLite as one JSON text (`TableOps.pageSource`): one statement
 * per batch where the table is set-based, instead of a statement per row. Such a batch is sent and
 * left in flight (`inFlight`): this thread builds the next batch, or waits for and checks the next
 * page, while the worker writes it. Returns the rows whose writing ended here.
 */
function* applyPage(
  ctx: SyncContext,
  db: SqliteDb,
  rows: SnapshotRow[],
  inFlight: InFlight,
): Generator<unknown, number, unknown> {
  type PageRow = [string[], number, Record<string, unknown>];
  const byTable = new Map<TableOps, PageRow[]>();
  for (const r of rows) {
    const { ops, keyText } = checkSnapshotRow(ctx, r);
    let list = byTable.get(ops);
    if (!list) {
      list = [];
      byTable.set(ops, list);
    }
    list.push([keyText, r.row_version, r.payload as Record<string, unknown>]);
  }
  let n = 0;
  const per = applyBatchRows(db);
  for (const [ops, list] of byTable) {
    for (let i = 0; i < list.length; i += per) {
      const src = ops.pageSource(list.slice(i, i + per));
      n += yield* settle(inFlight);
      if (ops.setBased) inFlight.finish = ops.startSet(db, src);
      else n += yield* applySnapshotRows(ctx, db, ops.m.table, src);
      yield;
    }
  }
  return n;
}

/**
 * The stage-free hydrate: ONE sliced transaction on the apply connection wipes the managed tables,
 * applies each page straight into the app's tables and row state as it arrives (the generator
 * waits for the page: see `TxRunner.sliced`'s `waits`), carries the local intents over and
 * finishes. Each row is written once (the staged path writes it to the stage, reads it back and
 * writes it again). Meanwhile the app's connection reads the previous state (WAL snapshot
 * isolation) and a crash at any point leaves it, with the rebuild gate still set, so the next
 * attach starts over. Throws `NoApplyConnection` (before anything is read) where the database
 * cannot run such a transaction.
 */
async function hydrateStageFree(
  ctx: SyncContext,
  plan: RebuildPlan,
  session: SnapshotSession,
  pages: PageReader,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const rowCount = session.row_count;
  const rotated = await ctx.runner.sliced(
    function* (db) {
      const state = yield* beginSwap(ctx, db, plan);
      const apply = { phase: plan.phase, stage: 'apply' as const, total: rowCount };
      ctx.hooks.progress({ ...apply, done: 0 });
      let n = 0;
      const inFlight: InFlight = {};
      for (;;) {
        const rows = (yield pages.next()) as SnapshotRow[] | undefined;
        if (rows === undefined) break;
        n += yield* applyPage(ctx, db, rows, inFlight);
        ctx.hooks.progress({ ...apply, done: n });
      }
      const last = yield* settle(inFlight);
      if (last > 0) {
        n += last;
        ctx.hooks.progress({ ...apply, done: n });
      }
      if (n !== rowCount)
        throw protocolError('snapshot row count does not match the session', { expected: rowCount, got: n });
      return yield* finishSwap(ctx, db, plan, state, session.snapshot_bundle_seq);
    },
    signal,
    rowCount,
    { waits: true },
  );
  snapshotApplied(ctx, rowCount, session.snapshot_bundle_seq);
  return rotated;
}

/**
 * The staged path (where no transaction can wait for the network): each page is staged in its own
 * transaction, then `applySnapshot` swaps the staged snapshot in.
 */
async function hydrateStaged(
  ctx: SyncContext,
  plan: RebuildPlan,
  session: SnapshotSession,
  pages: PageReader,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const sid = session.snapshot_id;
  const schema = ctx.cfg.schema;
  for (;;) {
    const base = pages.fetched;
    const rows = await pages.next();
    if (rows === undefined) break;
    // One transaction per page, in slices (a 5,000-row page is longer than one event-loop turn).
    await ctx.runner.sliced(
      function* (db) {
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i] as SnapshotRow;
          const { ops, keyText } = checkSnapshotRow(ctx, r);
          stageSnapshotRow(db, ops.m, keyJsonFromParams(ops.m), {
            snapshotId: sid,
            ordinal: base + i + 1,
            schema,
            keyText,
            version: r.row_version,
            payload: JSON.stringify(r.payload),
          });
          if (i % 50 === 49) yield;
        }
      },
      signal,
      rows.length,
    );
  }
  return applySnapshot(ctx, plan, sid, session.snapshot_bundle_seq, session.row_count, signal);
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
