/**
 * Push sessions (§4), their lifetime: create (idempotent per source bundle, checked against the
 * scope's initialisation state and the source's sequence), load-and-lock for chunk and commit, and
 * delete. Chunk upload is in push-chunk.ts, commit in push-commit.ts.
 */
import { randomUUID } from 'node:crypto';
import type { PushSessionCreateRequest, PushSessionCreateResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { wireError } from '../errors.js';
import { oneTripPreamble, runStatements } from './batch.js';
import {
  boundedBatchTx,
  boundedTx,
  type OpOptions,
  type ServiceContext,
  txOpts,
  UUID_RE,
} from './context.js';
import { cachedPlanFunctionSql } from './db.js';
import { SCOPE_INITIALIZED, SCOPE_INITIALIZING, SCOPE_UNINITIALIZED } from './schema-sql.js';
import {
  checkSourceSequence,
  ensureUserScopeSql,
  lockUserLater,
  requireActiveInitializationLease,
  type ScopeRow,
  type SourceRow,
  scopeColumnsOf,
  scopeOfLockedRow,
  sourceStateOf,
} from './state.js';

/** Transaction options of push create, chunk and commit. */
export const PUSH_TX = { isolation: 'read committed', maxAttempts: 3 } as const;

export async function createPushSession(
  ctx: ServiceContext,
  actor: Actor,
  req: PushSessionCreateRequest,
  opts: OpOptions,
): Promise<PushSessionCreateResponse> {
  if (!(req.source_bundle_id > 0)) throw wireError('push_session_invalid', 'source_bundle_id must be > 0');
  if (!(req.planned_row_count > 0)) throw wireError('push_session_invalid', 'planned_row_count must be > 0');
  const initializationId = (req.initialization_id ?? '').trim().toLowerCase();
  const limits = ctx.options.limits;
  if (!initializationId) {
    const created = await createAtOnce(ctx, actor, req, opts);
    if (created) return created;
  }
  return boundedBatchTx(
    ctx,
    async (tx) => {
      // One round trip: the statement timeout, the user lock, the user and scope rows ensured (and
      // expired sessions swept), then the scope row locked with what the rest of create reads: the
      // source tuple's committed bundle (still retained) and the source's state. Each statement of
      // the batch takes its snapshot when it starts, so the reads come after the user lock.
      lockUserLater(tx, actor.userId, limits.uploadLockTimeoutMs);
      tx.later(ensureUserScopeSql({ sweepExpiredPushSessions: true }), [actor.userId]);
      const r = await tx.query<
        ScopeRow &
          SourceRow & {
            c_bundle_seq: string | null;
            c_row_count: string | null;
            c_bundle_hash: string | null;
          }
      >(
        `SELECT ${scopeColumnsOf('s')},
                c.bundle_seq::text AS c_bundle_seq, c.row_count::text AS c_row_count, c.bundle_hash AS c_bundle_hash,
                src.state, src.max_committed_source_bundle_id::text AS max, src.replaced_by_source_id
           FROM sync.scope_state s
           LEFT JOIN LATERAL (
             SELECT b.bundle_seq, b.row_count, encode(b.bundle_hash, 'hex') AS bundle_hash
               FROM sync.bundle_log b JOIN sync.user_state u ON u.user_pk = b.user_pk
              WHERE b.user_pk = s.user_pk AND b.source_id = $2 AND b.source_bundle_id = $3
                AND b.bundle_seq > u.retained_bundle_floor
              LIMIT 1) c ON TRUE
           LEFT JOIN sync.source_state src ON src.user_pk = s.user_pk AND src.source_id = $2
          WHERE s.user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = $1) FOR UPDATE OF s`,
        [actor.userId, actor.sourceId, req.source_bundle_id],
      );
      const row = r.rows[0]!;
      const userPk = row.user_pk;
      const scope = await scopeOfLockedRow(tx, row);
      if (scope.stateCode === SCOPE_UNINITIALIZED) {
        if (initializationId)
          throw wireError('initialization_expired', 'initialization lease is no longer active');
        throw wireError('scope_uninitialized', `scope for user ${actor.userId} is uninitialized`);
      }
      if (scope.stateCode === SCOPE_INITIALIZING) {
        if (!initializationId) {
          throw wireError(
            'push_session_invalid',
            'initialization_id is required while the scope is initializing',
          );
        }
        await requireActiveInitializationLease(tx, userPk, actor.sourceId, initializationId, limits);
      } else if (initializationId) {
        throw wireError(
          'push_session_invalid',
          'initialization_id must be absent once the scope is initialized',
        );
      }

      if (row.c_bundle_seq !== null) {
        return {
          status: 'already_committed',
          bundle_seq: Number(row.c_bundle_seq),
          source_id: actor.sourceId,
          source_bundle_id: req.source_bundle_id,
          row_count: Number(row.c_row_count),
          bundle_hash: row.c_bundle_hash ?? '',
        };
      }
      const src = sourceStateOf(row);
      checkSourceSequence(actor, src, req.source_bundle_id);
      // A session staged earlier for the same source tuple is replaced: its staged data deleted (what
      // the cascade trigger of a DELETE would do) and its row taken over by the new session, in one
      // statement.
      const pushId = randomUUID();
      await tx.query(
        `WITH old AS (
           SELECT push_id FROM sync.push_sessions WHERE user_pk = $2 AND source_id = $3 AND source_bundle_id = $4),
         old_chunks AS (DELETE FROM sync.push_session_chunks c USING old WHERE c.push_id = old.push_id),
         old_rows AS (DELETE FROM sync.push_session_rows r USING old WHERE r.push_id = old.push_id)
         INSERT INTO sync.push_sessions (push_id, user_pk, source_id, source_bundle_id, planned_row_count,
         next_expected_row_ordinal, initialization_id, expires_at)
       VALUES ($1, $2, $3, $4, $5, 0, $6, now() + make_interval(secs => $7::float8 / 1000))
       ON CONFLICT ON CONSTRAINT push_sessions_source_tuple_key DO UPDATE SET push_id = EXCLUDED.push_id,
         planned_row_count = EXCLUDED.planned_row_count, next_expected_row_ordinal = 0,
         initialization_id = EXCLUDED.initialization_id, expires_at = EXCLUDED.expires_at`,
        [
          pushId,
          userPk,
          actor.sourceId,
          req.source_bundle_id,
          req.planned_row_count,
          initializationId || null,
          limits.pushSessionTtlMs,
        ],
      );
      return { push_id: pushId, status: 'staging', planned_row_count: req.planned_row_count };
    },
    txOpts(opts.signal, PUSH_TX),
  );
}

/**
 * `WITH sc AS (…), ok AS (…)`: `ok` is the user's row (`user_pk`) when its scope is INITIALIZED (the
 * scope row locked), no retained committed bundle has the source tuple, and the source is not
 * retired and expects exactly this source_bundle_id; empty otherwise. `$1` the user id, `$2` the
 * source id, `$3` the source_bundle_id. Shared by the common create and the one-request push.
 */
export const EXPECTED_BUNDLE_CTES = `WITH sc AS (
       SELECT s.user_pk, u.retained_bundle_floor
         FROM sync.scope_state s JOIN sync.user_state u ON u.user_pk = s.user_pk
        WHERE u.user_id = $1 AND s.state_code = ${SCOPE_INITIALIZED}
          FOR UPDATE OF s),
     ok AS (
       SELECT sc.user_pk FROM sc
         LEFT JOIN sync.source_state src ON src.user_pk = sc.user_pk AND src.source_id = $2
        WHERE NOT EXISTS (
                SELECT 1 FROM sync.bundle_log b
                 WHERE b.user_pk = sc.user_pk AND b.source_id = $2 AND b.source_bundle_id = $3
                   AND b.bundle_seq > sc.retained_bundle_floor)
          AND CASE WHEN src.state IS NULL OR src.state = 'reserved' THEN 1
                   WHEN src.state = 'active' THEN src.max_committed_source_bundle_id + 1 END = $3)`;

/**
 * The statement of createAtOnce as the function `sync.push_create_at_once` (db.ts#cachedPlanFunctionSql:
 * planned once per connection; as text it was planned for every create, 0.6 ms of PostgreSQL's CPU
 * per 10-row bundle): `$1` user id, `$2` source id, `$3` source_bundle_id, `$4` the new push id,
 * `$5` planned_row_count, `$6` the session TTL in ms; answers the session's push_id when it created it.
 */
export const PUSH_CREATE_AT_ONCE_FN_SQL = cachedPlanFunctionSql(
  'push_create_at_once',
  'TEXT, TEXT, BIGINT, UUID, BIGINT, FLOAT8',
  'push_id TEXT',
  `${EXPECTED_BUNDLE_CTES},
     old AS (
       SELECT p.push_id FROM ok JOIN sync.push_sessions p
           ON p.user_pk = ok.user_pk AND p.source_id = $2 AND p.source_bundle_id = $3),
     old_chunks AS (DELETE FROM sync.push_session_chunks c USING old WHERE c.push_id = old.push_id),
     old_rows AS (DELETE FROM sync.push_session_rows r USING old WHERE r.push_id = old.push_id)
     INSERT INTO sync.push_sessions (push_id, user_pk, source_id, source_bundle_id, planned_row_count,
       next_expected_row_ordinal, initialization_id, expires_at)
     SELECT $4, ok.user_pk, $2, $3, $5, 0, NULL, now() + make_interval(secs => $6::float8 / 1000) FROM ok
     ON CONFLICT ON CONSTRAINT push_sessions_source_tuple_key DO UPDATE SET push_id = EXCLUDED.push_id,
       planned_row_count = EXCLUDED.planned_row_count, next_expected_row_ordinal = 0,
       initialization_id = EXCLUDED.initialization_id, expires_at = EXCLUDED.expires_at
     RETURNING push_sessions.push_id::text`,
);

/**
 * The common create in one round trip and one implicit transaction (batch.ts): a new bundle of an
 * initialized scope whose source expects exactly this source_bundle_id. The timeouts, the user
 * lock, the sweep of expired sessions, then one statement (its snapshot taken after the lock) that
 * locks the scope row and creates the session (replacing one staged for the same source tuple, as
 * below) only when the scope is INITIALIZED, the source tuple has no retained committed bundle and
 * the source is not retired and expects it. Undefined otherwise (nothing but the sweep was
 * written): the full path answers.
 */
async function createAtOnce(
  ctx: ServiceContext,
  actor: Actor,
  req: PushSessionCreateRequest,
  opts: OpOptions,
): Promise<PushSessionCreateResponse | undefined> {
  const limits = ctx.options.limits;
  const stmts = oneTripPreamble(limits);
  stmts.push({ sql: 'SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', params: [actor.userId] });
  stmts.push({ sql: 'DELETE FROM sync.push_sessions WHERE expires_at <= now()' });
  const pushId = randomUUID();
  stmts.push({
    sql: 'SELECT * FROM sync.push_create_at_once($1, $2, $3, $4, $5, $6)',
    params: [
      actor.userId,
      actor.sourceId,
      req.source_bundle_id,
      pushId,
      req.planned_row_count,
      limits.pushSessionTtlMs,
    ],
  });
  const r = await runStatements<{ push_id: string }>(
    ctx.db,
    stmts,
    opts.signal ? { signal: opts.signal } : undefined,
  );
  if (r.rows.length !== 1 || r.rows[0]!.push_id !== pushId) return undefined;
  return { push_id: pushId, status: 'staging', planned_row_count: req.planned_row_count };
}

/** A push session row, locked (see loadSessionForUpdate). */
export interface SessionRow {
  user_pk: string;
  user_id: string;
  source_id: string;
  source_bundle_id: string;
  planned_row_count: string;
  next_expected_row_ordinal: string;
  initialization_id: string | null;
  expired: boolean;
}

/**
 * Loads and locks a push session: 404 unknown (or non-UUID id), 403 other user, 410 expired.
 * With `lockUserId`, the user lock (lockUser) is taken in the same statement, before the row lock:
 * the session row is locked FOR UPDATE, so it is read as the previous lock holder left it (a re-read of the
 * updated row), never from the statement's earlier snapshot.
 */
export async function loadSessionForUpdate(
  tx: SyncQuerier,
  actor: Actor,
  pushId: string,
  lockUserId?: { userId: string; lockTimeoutMs: number },
): Promise<SessionRow> {
  if (!UUID_RE.test(pushId)) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  if (lockUserId && lockUserId.lockTimeoutMs > 0)
    await tx.query(`SET LOCAL lock_timeout = '${Math.ceil(lockUserId.lockTimeoutMs)}ms'`);
  const r = await tx.query<SessionRow>(
    `${lockUserId ? 'WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($2, 0)))' : ''}
     SELECT p.user_pk::text, u.user_id, p.source_id, p.source_bundle_id::text, p.planned_row_count::text,
            p.next_expected_row_ordinal::text, p.initialization_id::text, (p.expires_at < now()) AS expired
       FROM ${lockUserId ? 'l, ' : ''}sync.push_sessions p JOIN sync.user_state u ON u.user_pk = p.user_pk
      WHERE p.push_id = $1 FOR UPDATE OF p`,
    lockUserId ? [pushId, lockUserId.userId] : [pushId],
  );
  const s = r.rows[0];
  if (!s) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  if (s.user_id !== actor.userId)
    throw wireError('push_session_forbidden', `push session ${pushId} is forbidden`);
  if (s.expired) throw wireError('push_session_expired', `push session ${pushId} has expired`);
  return s;
}

export async function deletePushSession(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
): Promise<void> {
  await boundedTx(
    ctx,
    async (tx) => {
      await loadSessionForUpdate(tx, actor, pushId);
      await tx.query('DELETE FROM sync.push_sessions WHERE push_id = $1', [pushId]);
    },
    txOpts(opts.signal, { isolation: 'read committed' }),
  );
}
