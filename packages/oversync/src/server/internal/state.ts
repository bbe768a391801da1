/** Per-user scope, source and retention state shared by every write path. */

import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { SyncServerError, wireError } from '../errors.js';
import type { SyncLimits } from '../options.js';
import type { StatementBatch } from './batch.js';
import { cachedPlanFunctionSql, prepared } from './db.js';
import type { CommittedPushBundle } from './push-direct-bundle.js';
import {
  DIRECT_INSERT_TABLES_GUC,
  SCOPE_INITIALIZED,
  SCOPE_INITIALIZING,
  SCOPE_UNINITIALIZED,
} from './schema-sql.js';

export interface ScopeState {
  userPk: string;
  stateCode: number;
  initializerSourceId: string | null;
  initializationId: string | null;
  leaseExpiresAt: Date | null;
  /** Lease expiry is in the past (compared by the database clock). */
  leaseExpired: boolean;
}

/** Serialises every writer of one user across processes (released at COMMIT / ROLLBACK). */
export async function lockUser(tx: SyncQuerier, userId: string, lockTimeoutMs: number): Promise<void> {
  if (lockTimeoutMs > 0) await tx.query(`SET LOCAL lock_timeout = '${Math.ceil(lockTimeoutMs)}ms'`);
  await tx.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [userId]);
}

/** lockUser's statements queued on a batch (they travel with its next statement). */
export function lockUserLater(tx: StatementBatch, userId: string, lockTimeoutMs: number): void {
  if (lockTimeoutMs > 0) tx.later(`SET LOCAL lock_timeout = '${Math.ceil(lockTimeoutMs)}ms'`);
  tx.later('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [userId]);
}

/** ensureUserScope's statement (`$1` the user id). */
export function ensureUserScopeSql(opts?: { sweepExpiredPushSessions?: boolean }): string {
  return `WITH ${opts?.sweepExpiredPushSessions ? 'swept AS (DELETE FROM sync.push_sessions WHERE expires_at <= now()),' : ''}
     ins AS (
       INSERT INTO sync.user_state (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING RETURNING user_pk
     ),
     u AS (SELECT user_pk FROM ins UNION ALL SELECT user_pk FROM sync.user_state WHERE user_id = $1 LIMIT 1),
     sc AS (INSERT INTO sync.scope_state (user_pk, state_code) SELECT user_pk, 0 FROM u ON CONFLICT (user_pk) DO NOTHING)
     SELECT user_pk::text FROM u`;
}

/**
 * Ensures user_state and scope_state rows exist; returns user_pk (as text: bigint). One statement;
 * `sweepExpiredPushSessions` also deletes every expired push session in it (push session create).
 */
export async function ensureUserScope(
  tx: SyncQuerier,
  userId: string,
  opts?: { sweepExpiredPushSessions?: boolean },
): Promise<string> {
  const r = await tx.query<{ user_pk: string }>(ensureUserScopeSql(opts), [userId]);
  return r.rows[0]!.user_pk;
}

export async function findUserPk(tx: SyncQuerier, userId: string): Promise<string | undefined> {
  const r = await tx.query<{ user_pk: string }>(
    'SELECT user_pk::text FROM sync.user_state WHERE user_id = $1',
    [userId],
  );
  return r.rows[0]?.user_pk;
}

const SCOPE_COLUMNS = `user_pk::text AS user_pk, state_code, initializer_source_id, initialization_id::text AS initialization_id,
  lease_expires_at, (state_code = 1 AND lease_expires_at <= now()) AS lease_expired`;

function toScope(r: {
  user_pk: string;
  state_code: number;
  initializer_source_id: string | null;
  initialization_id: string | null;
  lease_expires_at: Date | null;
  lease_expired: boolean | null;
}): ScopeState {
  return {
    userPk: r.user_pk,
    stateCode: r.state_code,
    initializerSourceId: r.initializer_source_id,
    initializationId: r.initialization_id,
    leaseExpiresAt: r.lease_expires_at,
    leaseExpired: r.lease_expired === true,
  };
}

/** Locks the scope row and lazily resets an expired initialization lease to UNINITIALIZED. */
export async function loadScopeForUpdate(tx: SyncQuerier, userPk: string): Promise<ScopeState> {
  const r = await tx.query<ScopeRow>(
    `SELECT ${SCOPE_COLUMNS} FROM sync.scope_state WHERE user_pk = $1 FOR UPDATE`,
    [userPk],
  );
  return scopeOfLockedRow(tx, r.rows[0]!);
}

/** The scope columns of a select (`SCOPE_COLUMNS`, or the same names from an alias). */
export type ScopeRow = Parameters<typeof toScope>[0];

/** SCOPE_COLUMNS of the scope_state row aliased `alias`. */
export function scopeColumnsOf(alias: string): string {
  return `${alias}.user_pk::text AS user_pk, ${alias}.state_code, ${alias}.initializer_source_id,
  ${alias}.initialization_id::text AS initialization_id, ${alias}.lease_expires_at,
  (${alias}.state_code = 1 AND ${alias}.lease_expires_at <= now()) AS lease_expired`;
}

/** A scope row read FOR UPDATE; an expired initialization lease is reset to UNINITIALIZED. */
export async function scopeOfLockedRow(tx: SyncQuerier, row: ScopeRow): Promise<ScopeState> {
  const s = toScope(row);
  if (s.stateCode === SCOPE_INITIALIZING && s.leaseExpired) {
    await tx.query(
      `UPDATE sync.scope_state SET state_code = 0, initializer_source_id = NULL, initialization_id = NULL,
              lease_expires_at = NULL WHERE user_pk = $1`,
      [s.userPk],
    );
    return {
      ...s,
      stateCode: SCOPE_UNINITIALIZED,
      initializerSourceId: null,
      initializationId: null,
      leaseExpiresAt: null,
    };
  }
  return s;
}

/** Read-only scope check for pull / snapshot / watch: the scope must be INITIALIZED. */
export async function requireInitializedScopeReadOnly(tx: SyncQuerier, userId: string): Promise<string> {
  const r = await tx.query<Parameters<typeof toScope>[0]>(
    `SELECT ${SCOPE_COLUMNS.replace('user_pk::text AS user_pk', 's.user_pk::text AS user_pk')}
       FROM sync.scope_state s JOIN sync.user_state u ON u.user_pk = s.user_pk WHERE u.user_id = $1`,
    [userId],
  );
  const row = r.rows[0];
  if (!row) throw wireError('scope_uninitialized', `scope for user ${userId} is uninitialized`);
  const s = toScope(row);
  if (s.stateCode === SCOPE_INITIALIZED) return s.userPk;
  if (s.stateCode === SCOPE_INITIALIZING && !s.leaseExpired) {
    throw wireError('scope_initializing', `scope for user ${userId} is initializing`, {
      details: { leaseExpiresAt: s.leaseExpiresAt?.toISOString() },
    });
  }
  throw wireError('scope_uninitialized', `scope for user ${userId} is uninitialized`);
}

/**
 * Checks that `sourceId` holds the active initialization lease `initializationId` and refreshes it.
 * 409 `initialization_stale` / 410 `initialization_expired` otherwise.
 */
export async function requireActiveInitializationLease(
  tx: SyncQuerier,
  userPk: string,
  sourceId: string,
  initializationId: string,
  limits: SyncLimits,
): Promise<void> {
  const s = await loadScopeForUpdate(tx, userPk);
  if (s.stateCode !== SCOPE_INITIALIZING) {
    throw wireError('initialization_stale', 'scope is no longer initializing');
  }
  if (s.leaseExpired) throw wireError('initialization_expired', 'initialization lease is no longer active');
  if (s.initializerSourceId !== sourceId) {
    throw wireError('initialization_stale', 'source does not own the active initialization lease');
  }
  if (s.initializationId !== initializationId.toLowerCase()) {
    throw wireError(
      'initialization_stale',
      'initialization_id does not match the active initialization lease',
    );
  }
  await tx.query(
    `UPDATE sync.scope_state SET lease_expires_at = now() + make_interval(secs => $2::float8 / 1000)
      WHERE user_pk = $1`,
    [userPk, limits.initializationLeaseTtlMs],
  );
}

export async function markScopeInitialized(
  tx: SyncQuerier,
  userPk: string,
  bySourceId: string,
): Promise<void> {
  await tx.query(
    `UPDATE sync.scope_state SET state_code = 2, initializer_source_id = NULL, initialization_id = NULL,
            lease_expires_at = NULL, initialized_at = now(), initialized_by_source_id = $2
      WHERE user_pk = $1`,
    [userPk, bySourceId],
  );
}

export interface SourceState {
  state: 'active' | 'reserved' | 'retired' | null;
  maxCommitted: number;
  replacedBy: string;
  expected: number;
}

export async function loadSourceState(
  tx: SyncQuerier,
  userPk: string,
  sourceId: string,
  forUpdate: boolean,
): Promise<SourceState> {
  const r = await tx.query<SourceRow>(
    `SELECT state, max_committed_source_bundle_id::text AS max, replaced_by_source_id
       FROM sync.source_state WHERE user_pk = $1 AND source_id = $2${forUpdate ? ' FOR UPDATE' : ''}`,
    [userPk, sourceId],
  );
  return sourceStateOf(r.rows[0]);
}

/** A source_state row as selected (`max` as text); state null when the source has none. */
export interface SourceRow {
  state: SourceState['state'];
  max: string | null;
  replaced_by_source_id: string | null;
}

export function sourceStateOf(row: SourceRow | undefined): SourceState {
  if (!row || row.state === null) return { state: null, maxCommitted: 0, replacedBy: '', expected: 1 };
  const max = Number(row.max);
  return {
    state: row.state,
    maxCommitted: max,
    replacedBy: row.replaced_by_source_id ?? '',
    expected: row.state === 'reserved' ? 1 : max + 1,
  };
}

export function sourceRetiredError(userId: string, sourceId: string, replacedBy: string) {
  const body: Record<string, unknown> = { source_id: sourceId };
  if (replacedBy) body['replaced_by_source_id'] = replacedBy;
  return wireError(
    'source_retired',
    `source ${sourceId} for user ${userId} was retired and replaced by ${replacedBy}`,
    { body, details: { sourceId, replacedBySourceId: replacedBy } },
  );
}

/** Contiguity of `source_bundle_id` for a new bundle (history_pruned / out_of_order / retired). */
export function checkSourceSequence(actor: Actor, s: SourceState, sourceBundleId: number): void {
  if (s.state === 'retired') throw sourceRetiredError(actor.userId, actor.sourceId, s.replacedBy);
  if (sourceBundleId < s.expected) {
    throw wireError(
      'history_pruned',
      `source tuple (${actor.sourceId}, ${sourceBundleId}) for user ${actor.userId} is older than retained duplicate history; max committed source_bundle_id is ${s.maxCommitted}`,
    );
  }
  if (sourceBundleId > s.expected) {
    throw wireError(
      'source_sequence_out_of_order',
      `source ${actor.sourceId} for user ${actor.userId} expected next source_bundle_id ${s.expected}, got ${sourceBundleId}`,
    );
  }
}

/**
 * After a committed bundle: the source's state made active at `sourceBundleId`, then retention
 * (applyRetention). The upsert and retention's read are one statement; `deletePushId` deletes that
 * push session in it too (push commit).
 */
export async function activateSourceAndRetain(
  tx: SyncQuerier,
  userPk: string,
  sourceId: string,
  sourceBundleId: number,
  limits: SyncLimits,
  deletePushId?: string,
  /** A direct push bundle: checks that nothing of this transaction went through the capture stage. */
  checkNoCaptureStage?: boolean,
): Promise<void> {
  // sync.source_activate (SOURCE_ACTIVATE_FN_SQL): planned once per connection, not per push.
  const r = await tx.query<RetentionRow & { staged: boolean | null }>(
    'SELECT * FROM sync.source_activate($1, $2, $3, $4, $5)',
    [userPk, sourceId, sourceBundleId, deletePushId ?? null, checkNoCaptureStage === true],
  );
  // Guaranteed by directBundleEligible; checked because a miss would silently drop captured rows.
  if (checkNoCaptureStage && r.rows[0]?.staged !== false)
    throw new Error('a direct push bundle captured rows through the stage');
  await retainFrom(tx, userPk, r.rows[0], limits);
}

/**
 * activateSourceAndRetain for a bundle commitDirectBundle left unfinished (`finish: 'caller'`): its
 * log row finished, its notification sent, the deferred checks run and the source activated in
 * one prepared statement (sync.push_direct_finish), then retention.
 */
export async function finishDirectAndActivate(
  tx: SyncQuerier,
  userPk: string,
  sourceId: string,
  sourceBundleId: number,
  limits: SyncLimits,
  deletePushId: string | undefined,
  bundle: CommittedPushBundle,
): Promise<void> {
  const u = bundle.unfinished;
  if (!u) throw new Error('finishDirectAndActivate: the bundle was finished already');
  const r = await tx.query<RetentionRow & { staged: boolean | null }>(
    PUSH_DIRECT_FINISH_CALL,
    [
      userPk,
      bundle.bundleSeq,
      bundle.rowCount,
      u.byteCount,
      bundle.hash,
      u.notify?.[0] ?? null,
      u.notify?.[1] ?? null,
      sourceId,
      sourceBundleId,
      deletePushId ?? null,
    ],
    prepared(PUSH_DIRECT_FINISH_CALL),
  );
  if (r.rows[0]?.staged !== false) throw new Error('a direct push bundle captured rows through the stage');
  await retainFrom(tx, userPk, r.rows[0], limits);
}
const PUSH_DIRECT_FINISH_CALL =
  'SELECT * FROM sync.push_direct_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)';

interface RetentionRow {
  latest: string;
  floor: string;
}

/**
 * What a committed push (or server write) does to its source and the user's retention, as the
 * function `sync.source_activate` (db.ts#cachedPlanFunctionSql; sent as text it was planned on
 * every commit): the source state upserted active at `$3`, the push session `$4` (NULL: none)
 * deleted, and the user's latest bundle_seq and retained floor read; with `$5`, whether this
 * transaction staged captured rows of the user (NULL without).
 */
export const SOURCE_ACTIVATE_FN_SQL = cachedPlanFunctionSql(
  'source_activate',
  'BIGINT, TEXT, BIGINT, UUID, BOOL',
  'latest TEXT, floor TEXT, staged BOOL',
  `WITH src AS (
     INSERT INTO sync.source_state (user_pk, source_id, state, max_committed_source_bundle_id)
     VALUES ($1, $2, 'active', $3)
     ON CONFLICT (user_pk, source_id) DO UPDATE SET state = 'active',
       max_committed_source_bundle_id = EXCLUDED.max_committed_source_bundle_id,
       replaced_by_source_id = '', retirement_reason = ''),
   del AS (DELETE FROM sync.push_sessions WHERE push_id = $4)
   SELECT (next_bundle_seq - 1)::text, retained_bundle_floor::text,
          CASE WHEN $5 THEN EXISTS (SELECT 1 FROM sync.bundle_capture_stage
                                     WHERE txid = txid_current() AND user_pk = $1) END
     FROM sync.user_state WHERE user_pk = $1`,
);
const RETENTION_SELECT =
  'SELECT (next_bundle_seq - 1)::text AS latest, retained_bundle_floor::text AS floor FROM sync.user_state WHERE user_pk = $1';

/** Moves the retained floor forward (at most one prune batch per committed bundle). */
export async function applyRetention(tx: SyncQuerier, userPk: string, limits: SyncLimits): Promise<void> {
  const r = await tx.query<RetentionRow>(RETENTION_SELECT, [userPk]);
  await retainFrom(tx, userPk, r.rows[0], limits);
}

async function retainFrom(
  tx: SyncQuerier,
  userPk: string,
  row: RetentionRow | undefined,
  limits: SyncLimits,
): Promise<void> {
  if (!row) return;
  const latest = Number(row.latest);
  const floor = Number(row.floor);
  let target = Math.max(0, latest - limits.retainedBundlesPerUser);
  if (target <= floor) return;
  target = Math.min(target, floor + limits.retentionPruneBatchSize);
  await tx.query('UPDATE sync.user_state SET retained_bundle_floor = $2 WHERE user_pk = $1', [
    userPk,
    target,
  ]);
  await tx.query('DELETE FROM sync.bundle_log WHERE user_pk = $1 AND bundle_seq <= $2', [userPk, target]);
}

/** The bundle context of §3.1 (what setBundleContext sets). */
export interface BundleContext {
  userId: string;
  userPk: string;
  sourceId: string;
  sourceBundleId: number;
  initializationId: string;
  /** Push commit only: table ids whose INSERTs it captures itself (`DIRECT_INSERT_TABLES_GUC`). */
  directInsertTableIds?: readonly number[];
}

/** The GUC names and values of a bundle context (two text[] parameters of bundleContextCtes). */
export function bundleContextParams(ctx: BundleContext): [string[], string[]] {
  const names = [
    'oversync.bundle_user_id',
    'oversync.bundle_user_pk',
    'oversync.bundle_source_id',
    'oversync.bundle_source_bundle_id',
    'oversync.bundle_initialization_id',
  ];
  const values = [ctx.userId, ctx.userPk, ctx.sourceId, String(ctx.sourceBundleId), ctx.initializationId];
  if (ctx.directInsertTableIds && ctx.directInsertTableIds.length > 0) {
    names.push(DIRECT_INSERT_TABLES_GUC);
    values.push(`,${ctx.directInsertTableIds.join(',')},`);
  }
  return [names, values];
}

/**
 * CTEs `bc_t`, `bc_ok` (`ok`: no name already carries another value) and `bc_set` (`ok`, and the
 * count set: every name set only when none conflicts) over the text[] parameters `$names`, `$values`.
 * With `gate` (a CTE of at most one row with a column `user_pk`), nothing is set unless it has its
 * row, and the value of `oversync.bundle_user_pk` is its user_pk.
 */
export function bundleContextCtes(names: string, values: string, gate?: string): string {
  const t = gate
    ? `SELECT n, CASE WHEN n = 'oversync.bundle_user_pk' THEN g.user_pk::text ELSE v END AS v
         FROM ${gate} g, unnest(${names}::text[], ${values}::text[]) AS t(n, v)`
    : `SELECT n, v FROM unnest(${names}::text[], ${values}::text[]) AS t(n, v)`;
  return `bc_t AS (${t}),
     bc_ok AS (SELECT NOT EXISTS (SELECT 1 FROM bc_t WHERE coalesce(current_setting(n, true), '') NOT IN ('', v)) AS ok),
     bc_set AS (SELECT bc_ok.ok, CASE WHEN bc_ok.ok THEN (SELECT count(set_config(n, v, true)) FROM bc_t) END AS n FROM bc_ok)`;
}

export function bundleContextConflict(): SyncServerError {
  return new SyncServerError(
    'OVERSYNC_BUNDLE_CONTEXT_CONFLICT',
    'transaction already carries conflicting sync bundle context',
  );
}

/** The bundle-context GUCs of §3.1, transaction-local; refuses to mix two contexts in one transaction. */
export async function setBundleContext(tx: SyncQuerier, ctx: BundleContext): Promise<void> {
  // One statement: checks every name against the value it already carries (none, or the same),
  // and sets them all only when none conflicts.
  const r = await tx.query<{ ok: boolean }>(
    `WITH ${bundleContextCtes('$1', '$2')} SELECT ok, n FROM bc_set`,
    bundleContextParams(ctx),
  );
  if (!r.rows[0]!.ok) throw bundleContextConflict();
}
