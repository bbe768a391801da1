/**
 * Push commit (§4.3): the locked session's staged rows checked for conflicts, applied, and turned
 * into one committed bundle, all in one transaction. A bundle whose data the database refuses is
 * committed again carefully, to name the refused row as a `push_conflict` (push-conflict.ts).
 */
import type { PushSessionCommitResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import { wireError } from '../errors.js';
import { StatementBatch } from './batch.js';
import { type DirectInsertEvent, finalizeCapturedBundle } from './capture.js';
import { type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { cachedPlanFunctionSql } from './db.js';
import { applyRows } from './push-apply.js';
import { commitStagedBundle, STREAM_COMMIT_MIN_ROWS, scanStagedBundle } from './push-commit-stream.js';
import { dataRefusalOf, locateRefusedRow, refusedRowConflict } from './push-conflict.js';
import { type CommittedPushBundle, commitDirectBundle, directBundleEligible } from './push-direct-bundle.js';
import { type DirectInsertPlan, directInsertPlan } from './push-direct-insert.js';
import { PUSH_TX, type SessionRow } from './push-session.js';
import { type ApplyRow, loadStagedRows, type StagedChunk } from './push-staging.js';
import {
  checkRowVersions,
  ROW_STATE_PROBE_SQL,
  type RowStateOf,
  type RowStateRow,
} from './push-version-check.js';
import {
  activateSourceAndRetain,
  type BundleContext,
  finishDirectAndActivate,
  loadSourceState,
  lockUserLater,
  markScopeInitialized,
  requireActiveInitializationLease,
  type SourceRow,
  type SourceState,
  setBundleContext,
  sourceRetiredError,
  sourceStateOf,
} from './state.js';

/** What a commit reads first: the locked session, and (see loadCommitStart) its chunks and source state. */
export interface CommitStart {
  /** The staged session committed (deleted with the commit); undefined for a one-request push. */
  pushId: string | undefined;
  session: SessionRow;
  /** Read with the session (its chunks in row order and its source's state locked FOR UPDATE), or not. */
  together:
    | {
        chunks: StagedChunk[];
        source: SourceState;
        /** The row_state of the staged rows, when every chunk names its keys as hex. */
        states: RowStateRow[] | undefined;
      }
    | undefined;
  /**
   * The bundle_seq the loader already allocated, its log row written and the bundle context set
   * (sync.push_bundle_start, when `direct` was asked and every row is fresh): the commit goes the
   * direct way (push-direct-bundle.ts) with it.
   */
  directSeq?: number | undefined;
}

/**
 * What loadCommitStart reads, as the function `sync.push_commit_start` (db.ts#cachedPlanFunctionSql:
 * planned once per connection; sent as text it was planned for every commit, 0.8 ms of PostgreSQL's
 * CPU per 10-row bundle): `$1` the push id, `$2` the actor's user id, `$3` chunksBelowRows.
 */
export const PUSH_COMMIT_START_FN_SQL = cachedPlanFunctionSql(
  'push_commit_start',
  'UUID, TEXT, BIGINT',
  `k TEXT, user_pk TEXT, user_id TEXT, source_id TEXT, source_bundle_id TEXT, planned_row_count TEXT,
   next_expected_row_ordinal TEXT, initialization_id TEXT, expired BOOL, start TEXT, row_count INT4, meta TEXT,
   payloads TEXT, state TEXT, max TEXT, replaced_by_source_id TEXT, table_id INT4, key_bytes BYTEA,
   bundle_seq TEXT, deleted BOOL`,
  `WITH s AS (
       SELECT p.push_id, p.user_pk, u.user_id, p.source_id, p.source_bundle_id, p.planned_row_count,
              p.next_expected_row_ordinal, p.initialization_id, (p.expires_at < now()) AS expired
         FROM sync.push_sessions p JOIN sync.user_state u ON u.user_pk = p.user_pk
        WHERE p.push_id = $1 FOR UPDATE OF p),
     w AS (
       SELECT push_id, user_pk, source_id FROM s
        WHERE user_id = $2 AND NOT expired AND initialization_id IS NULL AND planned_row_count < $3),
     src AS (
       SELECT st.state, st.max_committed_source_bundle_id, st.replaced_by_source_id
         FROM w, sync.source_state st WHERE st.user_pk = w.user_pk AND st.source_id = w.source_id
          FOR UPDATE OF st)
     SELECT 'p' AS k, user_pk::text, user_id, source_id, source_bundle_id::text, planned_row_count::text,
            next_expected_row_ordinal::text, initialization_id::text, expired,
            NULL::text AS start, NULL::int4 AS row_count, NULL::text AS meta, NULL::text AS payloads,
            NULL::text AS state, NULL::text AS max, NULL::text AS replaced_by_source_id,
            NULL::int4 AS table_id, NULL::bytea AS key_bytes, NULL::text AS bundle_seq, NULL::bool AS deleted FROM s
     UNION ALL
     SELECT 'w', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL FROM w
     UNION ALL
     SELECT 's', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            state, max_committed_source_bundle_id::text, replaced_by_source_id, NULL, NULL, NULL, NULL FROM src
     UNION ALL
     SELECT 'c', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            c.start_row_ordinal::text, c.row_count, c.meta, c.payloads, NULL, NULL, NULL, NULL, NULL, NULL, NULL
       FROM w JOIN sync.push_session_chunks c ON c.push_id = w.push_id
     UNION ALL
     SELECT 'r', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            st.table_id, st.key_bytes, st.bundle_seq::text, st.deleted
       FROM w JOIN sync.push_session_chunks c ON c.push_id = w.push_id,
            ROWS FROM (json_array_elements_text(c.meta::json -> 't'), json_array_elements_text(c.meta::json -> 'h'))
              AS x(table_id, key_hex),
            LATERAL (${ROW_STATE_PROBE_SQL('w.user_pk', 'x.table_id::int4', "decode(x.key_hex, 'hex')")}) st`,
);

/**
 * The user lock, then one statement (its snapshot taken after the lock) that locks the session row
 * and, when the session is the actor's, unexpired, without an initialization lease and below
 * `chunksBelowRows` planned rows, reads its staged chunks and locks its source's state: the locks
 * in the order the separate statements took them (user, session, source), in one round trip with
 * whatever `tx` has queued. Every writer of a session's chunks holds the user lock, so the chunks
 * read are the ones the session row says; answers like loadSessionForUpdate.
 */
async function loadCommitStart(
  tx: StatementBatch,
  actor: Actor,
  pushId: string,
  lockTimeoutMs: number,
  chunksBelowRows: number,
): Promise<CommitStart> {
  if (!UUID_RE.test(pushId)) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  lockUserLater(tx, actor.userId, lockTimeoutMs);
  const r = await tx.query<
    SessionRow & StagedChunk & SourceRow & RowStateRow & { k: 'p' | 'w' | 's' | 'c' | 'r' }
  >('SELECT * FROM sync.push_commit_start($1, $2, $3)', [pushId, actor.userId, chunksBelowRows]);
  let session: SessionRow | undefined;
  let read = false;
  let source: SourceRow | undefined;
  const chunks: StagedChunk[] = [];
  const states: RowStateRow[] = [];
  for (const x of r.rows) {
    if (x.k === 'p') session = x;
    else if (x.k === 'w') read = true;
    else if (x.k === 's') source = x;
    else if (x.k === 'c') chunks.push(x);
    else states.push(x);
  }
  if (!session) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  if (session.user_id !== actor.userId)
    throw wireError('push_session_forbidden', `push session ${pushId} is forbidden`);
  if (session.expired) throw wireError('push_session_expired', `push session ${pushId} has expired`);
  chunks.sort((a, b) => Number(a.start) - Number(b.start));
  // The row states are complete only when every chunk carries its keys as hex (`h`: JSON text
  // `"h":[` appears in a meta only as that field, quotes inside strings being escaped).
  const complete = chunks.every((c) => c.meta.includes('"h":['));
  return {
    pushId,
    session,
    together: read
      ? { chunks, source: sourceStateOf(source), states: complete ? states : undefined }
      : undefined,
  };
}

export async function commitPushSession(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
): Promise<PushSessionCommitResponse> {
  const limits = ctx.options.limits;
  const committed = await commitBundle(ctx, actor, opts, (tx, careful) =>
    loadCommitStart(
      tx,
      actor,
      pushId,
      limits.uploadLockTimeoutMs,
      careful ? Number.MAX_SAFE_INTEGER : STREAM_COMMIT_MIN_ROWS,
    ),
  );
  return committed!;
}

/**
 * What a commit starts from, read in its transaction (after `SET CONSTRAINTS ALL DEFERRED` was
 * queued on `tx`); undefined when this commit cannot go on (nothing written then: the transaction
 * ends and the commit answers undefined). `careful` on the second run after a data refusal. `plan`
 * lets a loader start the direct commit itself (CommitStart.directSeq) when it can tell its rows
 * all go that way.
 */
export type CommitLoader = (
  tx: StatementBatch,
  careful: boolean,
  plan: DirectInsertPlan,
) => Promise<CommitStart | undefined>;

/**
 * Commits the bundle `load` reads, in one transaction. When the database refuses the bundle's
 * data (a constraint, or a value its column refuses) the transaction is gone; the commit runs again
 * with the apply in a savepoint, so that the refused row can be found and answered as a conflict
 * (or the bundle commits, if a concurrent change made it acceptable meanwhile). The fast path pays
 * nothing for this.
 */
export async function commitBundle(
  ctx: ServiceContext,
  actor: Actor,
  opts: OpOptions,
  load: CommitLoader,
): Promise<PushSessionCommitResponse | undefined> {
  try {
    return await runCommit(ctx, actor, load, opts, false);
  } catch (e) {
    if (!dataRefusalOf(e)) throw e;
    return await runCommit(ctx, actor, load, opts, true);
  }
}

/** The bundle context a push commit sets (what sync.push_bundle_start sets when it starts one). */
export function pushBundleContext(
  userId: string,
  userPk: string,
  sourceId: string,
  sourceBundleId: number,
  initializationId: string,
  plan: DirectInsertPlan,
): BundleContext {
  return { userId, userPk, sourceId, sourceBundleId, initializationId, directInsertTableIds: plan.tableIds };
}

const APPLY_SAVEPOINT = 'oversync_apply';
/** One commit's bundle as it is applied: its rows, whose they are, and how they may be inserted. */
interface BundleApply {
  readonly tx: StatementBatch;
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
  load: CommitLoader,
  opts: OpOptions,
  careful: boolean,
): Promise<PushSessionCommitResponse | undefined> {
  const limits = ctx.options.limits;
  const topology = ctx.topology;
  return ctx.db.runTx(
    async (raw) => {
      const tx = new StatementBatch(raw);
      // Deferred from the start (nothing before the apply writes checked rows), sent with the lock.
      tx.later('SET CONSTRAINTS ALL DEFERRED');
      // A large bundle of fresh INSERTs is committed in pages (push-commit-stream.ts): its chunks
      // are not read here. Without an initialization lease to check (and lock) in between, the
      // chunks and the locked source state are read with the session: the same locks in the same order.
      const plan = await directInsertPlan(tx, topology);
      const start = await load(tx, careful, plan);
      if (!start) return undefined;
      const s = start.session;
      const pushId = start.pushId;
      // The scan only decides, so every other bundle fails here exactly as the whole-bundle path says.
      const planned = Number(s.planned_row_count);
      const runs =
        !careful && !start.together && pushId !== undefined && planned >= STREAM_COMMIT_MIN_ROWS
          ? await scanStagedBundle(tx, topology, pushId, s.user_pk, planned, plan)
          : undefined;
      const initializationId = s.initialization_id ?? '';
      let apply: ApplyRow[] = [];
      let src: SourceState | undefined;
      if (start.together) {
        apply = await loadStagedRows(tx, topology, pushId, s, start.together.chunks);
        src = start.together.source;
      } else if (!runs && pushId !== undefined) {
        apply = await loadStagedRows(tx, topology, pushId, s);
      }
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
      const bundleContext = pushBundleContext(
        actor.userId,
        s.user_pk,
        s.source_id,
        sourceBundleId,
        initializationId,
        plan,
      );
      let bundle: CommittedPushBundle;
      if (runs && pushId !== undefined) {
        await setBundleContext(tx, bundleContext);
        const source = { sourceId: s.source_id, sourceBundleId };
        bundle = await commitStagedBundle(tx, ctx, actor.userId, s.user_pk, pushId, source, runs, plan);
        // The deferred checks run with the next statement (their refusal fails the commit the same).
        tx.later('SET CONSTRAINTS ALL IMMEDIATE');
      } else {
        bundle = await applyWholeBundle(
          tx,
          ctx,
          s,
          apply,
          plan,
          careful,
          bundleContext,
          start.together?.states,
          start.directSeq,
        );
      }
      if (bundle.unfinished)
        await finishDirectAndActivate(tx, s.user_pk, s.source_id, sourceBundleId, limits, pushId, bundle);
      else
        await activateSourceAndRetain(
          tx,
          s.user_pk,
          s.source_id,
          sourceBundleId,
          limits,
          pushId,
          bundle.direct === true,
        );
      if (initializationId) await markScopeInitialized(tx, s.user_pk, s.source_id);
      await tx.flush();
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
  tx: StatementBatch,
  ctx: ServiceContext,
  s: SessionRow,
  apply: readonly ApplyRow[],
  plan: DirectInsertPlan,
  careful: boolean,
  bundleContext: BundleContext,
  states: readonly RowStateRow[] | undefined,
  /** CommitStart.directSeq. */
  directSeq: number | undefined,
): Promise<CommittedPushBundle> {
  const userId = bundleContext.userId;
  const stateOfRow = await checkRowVersions(tx, ctx.topology, userId, s.user_pk, apply, states);
  const source = { sourceId: s.source_id, sourceBundleId: bundleContext.sourceBundleId };
  const direct = !careful && directBundleEligible(apply, plan);
  // The loader asks for the seq exactly when every row is an INSERT the plan covers, and gets it
  // exactly when every row is fresh: the same test as directBundleEligible's.
  if (directSeq !== undefined && !direct)
    throw new Error('a bundle_seq was allocated for a push that is not direct');
  if (direct) {
    // The bundle context (read by nothing before the INSERTs) is set with the bundle_seq; the log
    // row's finish, the notification and the deferred checks go with the source's activation
    // (finishDirectAndActivate): a refusal there fails the commit as it did here.
    return await commitDirectBundle(tx, ctx, userId, s.user_pk, source, apply, plan, {
      context: bundleContext,
      seq: directSeq,
      finish: 'caller',
    });
  }
  // Set before the savepoint of a careful apply: rolling back to it must not clear the context.
  await setBundleContext(tx, bundleContext);
  const b: BundleApply = { tx, ctx, userId, userPk: s.user_pk, source, apply, plan };
  return careful ? await applyBundleCarefully(b, stateOfRow) : await applyBundle(b);
}

/** Applies the rows and writes the bundle: directly from the INSERTs when eligible, else captured. */
async function applyBundle(b: BundleApply): Promise<CommittedPushBundle> {
  const { tx, ctx } = b;
  let bundle: CommittedPushBundle;
  if (directBundleEligible(b.apply, b.plan)) {
    bundle = await commitDirectBundle(tx, ctx, b.userId, b.userPk, b.source, b.apply, b.plan, {});
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
