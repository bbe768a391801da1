/**
 * Push commit (§4.3): the locked session's staged rows checked for conflicts, applied, and turned
 * into one committed bundle, all in one transaction. A bundle whose data the database refuses is
 * committed again carefully, to name the refused row as a `push_conflict` (push-conflict.ts).
 */
import type { PushSessionCommitResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { wireError } from '../errors.js';
import { type DirectInsertEvent, finalizeCapturedBundle } from './capture.js';
import { type OpOptions, type ServiceContext, txOpts } from './context.js';
import { applyRows } from './push-apply.js';
import { commitStagedBundle, STREAM_COMMIT_MIN_ROWS, scanStagedBundle } from './push-commit-stream.js';
import { dataRefusalOf, locateRefusedRow, refusedRowConflict } from './push-conflict.js';
import { type CommittedPushBundle, commitDirectBundle, directBundleEligible } from './push-direct-bundle.js';
import { type DirectInsertPlan, directInsertPlan } from './push-direct-insert.js';
import { loadSessionForUpdate, PUSH_TX, type SessionRow } from './push-session.js';
import { type ApplyRow, loadStagedRows, type StagedChunk } from './push-staging.js';
import { checkRowVersions, type RowStateOf } from './push-version-check.js';
import {
  activateSourceAndRetain,
  loadSourceState,
  markScopeInitialized,
  requireActiveInitializationLease,
  type SourceRow,
  type SourceState,
  setBundleContext,
  sourceRetiredError,
  sourceStateOf,
} from './state.js';

/** The session's staged chunks (in row order) and its source's state locked FOR UPDATE, in one statement. */
async function loadStagedChunksAndSource(
  tx: SyncQuerier,
  pushId: string,
  userPk: string,
  sourceId: string,
): Promise<{ chunks: StagedChunk[]; source: SourceState }> {
  const r = await tx.query<StagedChunk & SourceRow & { k: string }>(
    `WITH src AS (
       SELECT state, max_committed_source_bundle_id::text AS max, replaced_by_source_id
         FROM sync.source_state WHERE user_pk = $2 AND source_id = $3 FOR UPDATE)
     SELECT 's' AS k, NULL::text AS start, NULL::int4 AS row_count, NULL::text AS meta, NULL::text AS payloads,
            state, max, replaced_by_source_id FROM src
     UNION ALL
     SELECT 'c', start_row_ordinal::text, row_count, meta, payloads, NULL, NULL, NULL
       FROM sync.push_session_chunks WHERE push_id = $1`,
    [pushId, userPk, sourceId],
  );
  const chunks = r.rows.filter((x) => x.k === 'c').sort((a, b) => Number(a.start) - Number(b.start));
  return { chunks, source: sourceStateOf(r.rows.find((x) => x.k === 's')) };
}

export async function commitPushSession(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
): Promise<PushSessionCommitResponse> {
  try {
    return await runCommit(ctx, actor, pushId, opts, false);
  } catch (e) {
    if (!dataRefusalOf(e)) throw e;
    // The database refused the bundle's data (a constraint, or a value its column refuses). The
    // transaction is gone; run the commit again with the apply in a savepoint, so that the refused
    // row can be found and answered as a conflict (or the bundle commits, if a concurrent change
    // made it acceptable meanwhile). The fast path above pays nothing for this.
    return await runCommit(ctx, actor, pushId, opts, true);
  }
}

const APPLY_SAVEPOINT = 'oversync_apply';
/** One commit's bundle as it is applied: its rows, whose they are, and how they may be inserted. */
interface BundleApply {
  readonly tx: SyncQuerier;
  readonly ctx: ServiceContext;
  readonly userId: string;
  readonly userPk: string;
  readonly source: { sourceId: string; sourceBundleId: number };
  readonly apply: readonly ApplyRow[];
  readonly plan: DirectInsertPlan;
}

async function runCommit(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
  careful: boolean,
): Promise<PushSessionCommitResponse> {
  const limits = ctx.options.limits;
  const topology = ctx.topology;
  return ctx.db.runTx(
    async (tx) => {
      const s = await loadSessionForUpdate(tx, actor, pushId, {
        userId: actor.userId,
        lockTimeoutMs: limits.uploadLockTimeoutMs,
      });
      const plan = await directInsertPlan(tx, topology);
      // A large bundle of fresh INSERTs is committed in pages (push-commit-stream.ts); the scan
      // only decides, so every other bundle fails here exactly as the whole-bundle path says.
      const planned = Number(s.planned_row_count);
      const runs =
        !careful && planned >= STREAM_COMMIT_MIN_ROWS
          ? await scanStagedBundle(tx, topology, pushId, s.user_pk, planned, plan)
          : undefined;
      const initializationId = s.initialization_id ?? '';
      // Without an initialization lease to check (and lock) in between, the chunks and the locked
      // source state are read in one statement: the same locks in the same order.
      const together = !runs && !initializationId;
      let apply: ApplyRow[] = [];
      let src: SourceState | undefined;
      if (together) {
        const read = await loadStagedChunksAndSource(tx, pushId, s.user_pk, s.source_id);
        apply = await loadStagedRows(tx, topology, pushId, s, read.chunks);
        src = read.source;
      } else if (!runs) {
        apply = await loadStagedRows(tx, topology, pushId, s);
      }
      await tx.query('SET CONSTRAINTS ALL DEFERRED');
      if (initializationId) {
        await requireActiveInitializationLease(tx, s.user_pk, s.source_id, initializationId, limits);
      }
      const sourceBundleId = Number(s.source_bundle_id);
      src ??= await loadSourceState(tx, s.user_pk, s.source_id, true);
      if (src.state === 'retired') throw sourceRetiredError(actor.userId, s.source_id, src.replacedBy);
      if (src.expected !== sourceBundleId) {
        throw wireError(
          'source_sequence_changed',
          `source ${s.source_id} for user ${actor.userId} changed expected next source_bundle_id from staged ${sourceBundleId} to ${src.expected} before commit`,
        );
      }
      await setBundleContext(tx, {
        userId: actor.userId,
        userPk: s.user_pk,
        sourceId: s.source_id,
        sourceBundleId,
        initializationId,
        directInsertTableIds: plan.tableIds,
      });
      let bundle: CommittedPushBundle;
      if (runs) {
        const source = { sourceId: s.source_id, sourceBundleId };
        bundle = await commitStagedBundle(tx, ctx, actor.userId, s.user_pk, pushId, source, runs, plan);
        await tx.query('SET CONSTRAINTS ALL IMMEDIATE');
      } else {
        bundle = await applyWholeBundle(tx, ctx, actor.userId, s, sourceBundleId, apply, plan, careful);
      }
      await activateSourceAndRetain(tx, s.user_pk, s.source_id, sourceBundleId, limits, pushId);
      if (initializationId) await markScopeInitialized(tx, s.user_pk, s.source_id);
      return {
        bundle_seq: bundle.bundleSeq,
        source_id: s.source_id,
        source_bundle_id: sourceBundleId,
        row_count: bundle.rowCount,
        bundle_hash: bundle.hash,
      };
    },
    txOpts(opts.signal, PUSH_TX),
  );
}

/** The whole-bundle path: every staged row in memory, checked for conflicts, applied. */
async function applyWholeBundle(
  tx: SyncQuerier,
  ctx: ServiceContext,
  userId: string,
  s: SessionRow,
  sourceBundleId: number,
  apply: readonly ApplyRow[],
  plan: DirectInsertPlan,
  careful: boolean,
): Promise<CommittedPushBundle> {
  const stateOfRow = await checkRowVersions(tx, ctx.topology, userId, s.user_pk, apply);
  const b: BundleApply = {
    tx,
    ctx,
    userId,
    userPk: s.user_pk,
    source: { sourceId: s.source_id, sourceBundleId },
    apply,
    plan,
  };
  return careful ? await applyBundleCarefully(b, stateOfRow) : await applyBundle(b);
}

/** Applies the rows and writes the bundle: directly from the INSERTs when eligible, else captured. */
async function applyBundle(b: BundleApply): Promise<CommittedPushBundle> {
  const { tx, ctx } = b;
  let bundle: CommittedPushBundle;
  if (directBundleEligible(b.apply, b.plan)) {
    bundle = await commitDirectBundle(tx, ctx, b.userId, b.userPk, b.source, b.apply, b.plan);
  } else {
    const direct: DirectInsertEvent[] = [];
    await applyRows(tx, b.userId, b.apply, b.plan, direct);
    const f = await finalizeCapturedBundle(tx, ctx.topology, b.userPk, b.source, ctx.notifyChannel, {
      direct,
    });
    if (!f)
      throw wireError('push_commit_invalid', 'push session produced no captured business-table effects');
    bundle = { bundleSeq: f.bundle_seq, rowCount: f.row_count, hash: f.bundle_hash };
  }
  // The deferred checks (foreign keys) run here instead of at COMMIT: same work, but inside
  // the transaction body, where a refusal can be told from a failed COMMIT and answered.
  await tx.query('SET CONSTRAINTS ALL IMMEDIATE');
  return bundle;
}

/**
 * applyBundle in a savepoint; when the database refuses the data, finds the row to blame (one row
 * at a time) and throws its `push_conflict`, or `push_commit_invalid` when no single row is.
 */
async function applyBundleCarefully(b: BundleApply, stateOfRow: RowStateOf): Promise<CommittedPushBundle> {
  const { tx } = b;
  await tx.query(`SAVEPOINT ${APPLY_SAVEPOINT}`);
  try {
    const bundle = await applyBundle(b);
    await tx.query(`RELEASE SAVEPOINT ${APPLY_SAVEPOINT}`);
    return bundle;
  } catch (e) {
    const refusal = dataRefusalOf(e);
    if (!refusal) throw e;
    await tx.query(`ROLLBACK TO SAVEPOINT ${APPLY_SAVEPOINT}`);
    await tx.query('SET CONSTRAINTS ALL DEFERRED');
    const refused = await locateRefusedRow(tx, b.ctx.topology, b.userId, b.apply, (row) =>
      applyRows(tx, b.userId, [row], b.plan, []),
    );
    // Nothing stored, no bundle_seq used, the session stays: the runTx rolls back on throw.
    if (!refused) {
      throw wireError(
        'push_commit_invalid',
        `push bundle was refused by the database (${refusal.reason}${refusal.constraint ? `, constraint ${refusal.constraint}` : ''}) and no single pushed row is to blame`,
        { details: { reason: refusal.reason, constraint: refusal.constraint } },
      );
    }
    const row = b.apply[refused.index]!;
    throw await refusedRowConflict(tx, b.userId, b.userPk, row, stateOfRow(row), refused);
  }
}
