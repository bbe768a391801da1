/**
 * The one-request push (`POST /sync/push`, feature `single_request_push`): a bundle of one chunk
 * created, uploaded and committed in one HTTP request instead of three (issue #19 point 3: at 10-row
 * bundles each request's HTTP, JSON and SQL planning cost as much as its data).
 *
 * The common case — an initialized scope whose source expects exactly this source_bundle_id, no
 * retained committed bundle for it — is one transaction that stages nothing: the rows, validated as
 * a chunk upload validates them, go straight into the commit (push-commit.ts), which reads the
 * scope, the source state and the rows' row_state in one statement after the user lock. Anything
 * else (already committed, out of order, an initialization lease, an uninitialized or retired
 * scope or source) runs the session's three steps in order, which answer it with their rules and
 * errors (a session replaced by a concurrent push of the same bundle starts them again); a failure
 * after their create leaves the staged session to the next create of the same source bundle (which
 * replaces it) or to its expiry, as a client that stopped between requests would.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type {
  PushBundleRequest,
  PushBundleResponse,
  PushSessionCreateRequest,
  PushSessionCreateResponse,
} from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import { SyncServerError, wireError } from '../errors.js';
import type { StatementBatch } from './batch.js';
import type { OpOptions, ServiceContext } from './context.js';
import { cachedPlanFunctionSql } from './db.js';
import { uploadPushChunk, validateChunkRows } from './push-chunk.js';
import { type CommitStart, commitBundle, commitPushSession, pushBundleContext } from './push-commit.js';
import { directBeginCtes, directInsertable } from './push-direct-bundle.js';
import { createPushSession, deletePushSession, EXPECTED_BUNDLE_CTES } from './push-session.js';
import { chunkMetaOf, type StagedChunk } from './push-staging.js';
import { ROW_STATE_PROBE_SQL, type RowStateRow } from './push-version-check.js';
import { keyHexOf, type StagedRowInput } from './rows.js';
import {
  type BundleContext,
  bundleContextCtes,
  bundleContextParams,
  lockUserLater,
  type SourceRow,
  sourceStateOf,
} from './state.js';

export async function pushBundle(
  ctx: ServiceContext,
  actor: Actor,
  req: PushBundleRequest,
  opts: OpOptions,
): Promise<PushBundleResponse> {
  if (!(req.source_bundle_id > 0)) throw wireError('push_session_invalid', 'source_bundle_id must be > 0');
  const staged = await validateChunkRows(ctx, actor, req.rows, 0, opts);
  if (!req.initialization_id) {
    const chunk: StagedChunk = {
      start: '0',
      row_count: staged.length,
      meta: chunkMetaOf(staged),
      payloads: staged.map((r) => r.payloadApply ?? '').join('\n'),
    };
    const limits = ctx.options.limits;
    const committed = await commitBundle(ctx, actor, opts, (tx, careful, plan) =>
      loadBundleStart(
        tx,
        actor,
        req.source_bundle_id,
        staged,
        chunk,
        limits.uploadLockTimeoutMs,
        // The context runCommit sets for this push (no lease: no initialization id; the user_pk is
        // filled in by the statement).
        !careful && staged.every((r) => directInsertable(r.opCode, r.info.tableId, plan))
          ? pushBundleContext(actor.userId, '', actor.sourceId, req.source_bundle_id, '', plan)
          : undefined,
      ),
    );
    if (committed) return { status: 'committed', ...committed };
  }
  const create: PushSessionCreateRequest = {
    source_bundle_id: req.source_bundle_id,
    planned_row_count: staged.length,
  };
  if (req.initialization_id) create.initialization_id = req.initialization_id;
  // A concurrent push of the same source bundle (a device's retry while its first request still
  // runs) replaces the session staged here (push-session.ts): this one then answers
  // push_session_not_found, and the push starts again after a short randomised pause (so that one
  // of them gets through), where the create tells it the bundle was committed meanwhile or stages
  // it anew. Bounded by MAX_REPLACED_ROUNDS.
  for (let round = 1; ; round++) {
    const created = await createOrReplay(ctx, actor, create, opts);
    if (created.status === 'already_committed') {
      return {
        status: 'already_committed',
        bundle_seq: created.bundle_seq ?? 0,
        source_id: created.source_id ?? actor.sourceId,
        source_bundle_id: created.source_bundle_id ?? req.source_bundle_id,
        row_count: created.row_count ?? 0,
        bundle_hash: created.bundle_hash ?? '',
      };
    }
    const pushId = created.push_id!;
    try {
      await uploadPushChunk(ctx, actor, pushId, { start_row_ordinal: 0, rows: req.rows }, opts);
      return { status: 'committed', ...(await commitPushSession(ctx, actor, pushId, opts)) };
    } catch (e) {
      const replaced = e instanceof SyncServerError && e.wireCode === 'push_session_not_found';
      if (!replaced || round >= MAX_REPLACED_ROUNDS) throw e;
      await sleep(Math.random() * 10 * round, undefined, opts.signal ? { signal: opts.signal } : undefined);
    }
  }
}

/**
 * createPushSession, except that a create under an initialization lease refused because the scope
 * is initialized now (`push_session_invalid`) asks again without the lease: when this source
 * bundle is what initialized it (a concurrent send of the same push committed it), the answer is
 * `already_committed`, as for any replay; otherwise the refusal stands.
 */
async function createOrReplay(
  ctx: ServiceContext,
  actor: Actor,
  create: PushSessionCreateRequest,
  opts: OpOptions,
): Promise<PushSessionCreateResponse> {
  try {
    return await createPushSession(ctx, actor, create, opts);
  } catch (e) {
    if (!create.initialization_id || !(e instanceof SyncServerError) || e.wireCode !== 'push_session_invalid')
      throw e;
    const { initialization_id: _, ...plain } = create;
    const replay = await createPushSession(ctx, actor, plain, opts).catch(() => undefined);
    if (replay?.status !== 'already_committed') {
      // a session staged by this probe is left to the next create of the bundle, or to its expiry
      if (replay?.push_id) await deletePushSession(ctx, actor, replay.push_id, opts).catch(() => undefined);
      throw e;
    }
    return replay;
  }
}

/** Rounds of pushBundle's session path when its session is replaced by concurrent pushes. */
const MAX_REPLACED_ROUNDS = 16;

/**
 * What loadBundleStart reads, as SQL: `$1` the user id, `$2` the source id, `$3` the
 * source_bundle_id, `$4` / `$5` the rows' table ids / key_bytes as hex, comma-joined. With `$6`
 * (every row an INSERT the direct plan covers) and no row_state for any key (every row fresh),
 * it also starts the direct commit as sync.direct_bundle_begin does: the bundle context `$7` /
 * `$8` (its user_pk value taken from the user row) checked and set, the bundle_seq allocated and
 * the log row written, answered as a row `b`.
 */
const BUNDLE_START_SQL = `${EXPECTED_BUNDLE_CTES},
     src AS (
       SELECT st.state, st.max_committed_source_bundle_id, st.replaced_by_source_id
         FROM ok, sync.source_state st WHERE st.user_pk = ok.user_pk AND st.source_id = $2
          FOR UPDATE OF st),
     rs AS (
       SELECT st.table_id, st.key_bytes, st.bundle_seq, st.deleted
         FROM ok, unnest(string_to_array($4, ',')::int4[], string_to_array($5, ',')) AS x(table_id, key_hex),
              LATERAL (${ROW_STATE_PROBE_SQL('ok.user_pk', 'x.table_id', "decode(x.key_hex, 'hex')")}) st),
     go AS (SELECT user_pk FROM ok WHERE $6 AND NOT EXISTS (SELECT 1 FROM rs)),
     ${bundleContextCtes('$7', '$8', 'go')},
     ${directBeginCtes('(SELECT user_pk FROM go)', '$2', '$3')}
     SELECT 'u' AS k, user_pk::text, NULL::text AS state, NULL::text AS max, NULL::text AS replaced_by_source_id,
            NULL::int4 AS table_id, NULL::bytea AS key_bytes, NULL::text AS bundle_seq, NULL::bool AS deleted FROM ok
     UNION ALL
     SELECT 's', NULL, state, max_committed_source_bundle_id::text, replaced_by_source_id, NULL, NULL, NULL, NULL FROM src
     UNION ALL
     SELECT 'r', NULL, NULL, NULL, NULL, table_id, key_bytes, bundle_seq::text, deleted FROM rs
     UNION ALL
     SELECT 'b', NULL, NULL, NULL, NULL, NULL, NULL, bundle_seq::text, NULL FROM log`;

/**
 * BUNDLE_START_SQL as the function `sync.push_bundle_start` (db.ts#cachedPlanFunctionSql): sent
 * as text it was planned again for every push, 0.5 ms of PostgreSQL's CPU per 10-row bundle, a
 * sixth of all it spent on one in the ingest bench. The five-argument version that servers before
 * the direct start created stays (an overload): during a rolling upgrade they still call it.
 */
export const PUSH_BUNDLE_START_FN_SQL = cachedPlanFunctionSql(
  'push_bundle_start',
  'TEXT, TEXT, BIGINT, TEXT, TEXT, BOOL, TEXT[], TEXT[]',
  'k TEXT, user_pk TEXT, state TEXT, max TEXT, replaced_by_source_id TEXT, table_id INT4, key_bytes BYTEA, bundle_seq TEXT, deleted BOOL',
  BUNDLE_START_SQL,
);

/**
 * The user lock, then one statement (its snapshot taken after the lock; sync.push_bundle_start)
 * that reads what the commit starts from when the push is the common case: the scope row locked (INITIALIZED), no
 * retained committed bundle of this source tuple, the source expecting `sourceBundleId` (its state
 * row locked), and the row_state of the rows' keys. Undefined otherwise (nothing written).
 */
async function loadBundleStart(
  tx: StatementBatch,
  actor: Actor,
  sourceBundleId: number,
  staged: readonly StagedRowInput[],
  chunk: StagedChunk,
  lockTimeoutMs: number,
  /** Every row an INSERT the direct plan covers: the bundle context its commit sets (user_pk from the row). */
  direct: BundleContext | undefined,
): Promise<CommitStart | undefined> {
  lockUserLater(tx, actor.userId, lockTimeoutMs);
  const [names, values] = direct ? bundleContextParams(direct) : [[], []];
  const r = await tx.query<{ k: 'u' | 's' | 'r' | 'b'; user_pk: string | null } & SourceRow & RowStateRow>(
    'SELECT * FROM sync.push_bundle_start($1, $2, $3, $4, $5, $6, $7, $8)',
    [
      actor.userId,
      actor.sourceId,
      sourceBundleId,
      // comma-joined (hex and ids never contain one), as push-version-check.ts sends them
      staged.map((s) => s.info.tableId).join(','),
      staged.map((s) => keyHexOf(s.info, s.keyString)).join(','),
      direct !== undefined,
      names,
      values,
    ],
  );
  let userPk: string | undefined;
  let source: SourceRow | undefined;
  let directSeq: number | undefined;
  const states: RowStateRow[] = [];
  for (const x of r.rows) {
    if (x.k === 'u') userPk = x.user_pk!;
    else if (x.k === 's') source = x;
    else if (x.k === 'b') directSeq = Number(x.bundle_seq);
    else states.push(x);
  }
  if (userPk === undefined) return undefined;
  const n = String(staged.length);
  return {
    pushId: undefined,
    session: {
      user_pk: userPk,
      user_id: actor.userId,
      source_id: actor.sourceId,
      source_bundle_id: String(sourceBundleId),
      planned_row_count: n,
      next_expected_row_ordinal: n,
      initialization_id: null,
      expired: false,
    },
    together: { chunks: [chunk], source: sourceStateOf(source), states },
    directSeq,
  };
}
