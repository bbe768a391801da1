/**
 * Push chunk upload (§4.2): rows validated (shape, then values the database would refuse, answered
 * as `push_row_invalid` for the row), then staged in order under the locked session.
 */
import type { PushSessionChunkRequest, PushSessionChunkResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { wireError } from '../errors.js';
import { oneTripPreamble, runStatements } from './batch.js';
import { boundedTx, type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { cachedPlanFunctionSql } from './db.js';
import { findInvalidValue, rowInvalidError } from './push-conflict.js';
import { loadSessionForUpdate, PUSH_TX } from './push-session.js';
import { chunkMetaOf } from './push-staging.js';
import { PushValidationError, PushValueError, type StagedRowInput, validatePushRows } from './rows.js';
import { findUserPk, requireActiveInitializationLease } from './state.js';

/**
 * Chunks up to this many rows are staged in one round trip (stageChunkAtOnce), their data written
 * into the statement's text; larger ones are sent as parameters in the transaction below, where the
 * round trips are a small part of the work and no copy of a large body is made for the literal.
 */
const AT_ONCE_MAX_ROWS = 100;

function chunkInvalid(e: unknown): never {
  if (e instanceof PushValidationError) throw wireError('push_chunk_invalid', e.message);
  throw e;
}

/**
 * A chunk's rows validated (shape, then values the database would refuse, answered as
 * `push_row_invalid` for the row at `start + index`), as they are staged.
 */
export async function validateChunkRows(
  ctx: ServiceContext,
  actor: Actor,
  rows: PushSessionChunkRequest['rows'] | undefined,
  start: number,
  opts: OpOptions,
): Promise<StagedRowInput[]> {
  const limits = ctx.options.limits;
  if (!rows || rows.length === 0) throw wireError('push_chunk_invalid', 'rows must not be empty');
  if (rows.length > limits.maxRowsPerPushChunk) {
    throw wireError(
      'push_chunk_invalid',
      `rows length ${rows.length} exceeds max_rows_per_push_chunk ${limits.maxRowsPerPushChunk}`,
    );
  }
  // Values are checked before the session is looked up, like the rest of row validation.
  const q: SyncQuerier = { query: (sql, params) => ctx.db.query(sql, params, txOpts(opts.signal, {})) };
  let staged: StagedRowInput[];
  try {
    staged = validatePushRows(ctx.topology, rows);
  } catch (e) {
    if (e instanceof PushValueError) {
      const userPk = await findUserPk(q, actor.userId);
      throw await rowInvalidError(q, actor.userId, userPk, start + e.index, e.row, e.column);
    }
    chunkInvalid(e);
  }
  const invalid = await findInvalidValue(q, staged);
  if (invalid) {
    const userPk = await findUserPk(q, actor.userId);
    const row = staged[invalid.index]!;
    throw await rowInvalidError(q, actor.userId, userPk, start + invalid.index, row, invalid.column);
  }
  return staged;
}

export async function uploadPushChunk(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  req: PushSessionChunkRequest,
  opts: OpOptions,
): Promise<PushSessionChunkResponse> {
  const limits = ctx.options.limits;
  if (req.start_row_ordinal < 0) throw wireError('push_chunk_invalid', 'start_row_ordinal must be >= 0');
  const staged = await validateChunkRows(ctx, actor, req.rows, req.start_row_ordinal, opts);
  if (staged.length <= AT_ONCE_MAX_ROWS) {
    const done = await stageChunkAtOnce(ctx, actor, pushId, req.start_row_ordinal, staged, opts);
    if (done !== undefined) return done;
  }
  // Anything else (an unknown, foreign, expired or initializing session, a chunk out of order or
  // beyond the plan) takes the full path, which answers it (or stages the chunk, if the session
  // changed meanwhile).
  return boundedTx(
    ctx,
    async (tx) => {
      const s = await loadSessionForUpdate(tx, actor, pushId, {
        userId: actor.userId,
        lockTimeoutMs: limits.uploadLockTimeoutMs,
      });
      if (s.initialization_id) {
        await requireActiveInitializationLease(tx, s.user_pk, s.source_id, s.initialization_id, limits);
      }
      const next = Number(s.next_expected_row_ordinal);
      if (req.start_row_ordinal !== next) {
        throw wireError(
          'push_chunk_out_of_order',
          `push session ${pushId} expected start_row_ordinal ${next}, got ${req.start_row_ordinal}`,
        );
      }
      const end = req.start_row_ordinal + staged.length;
      if (end > Number(s.planned_row_count))
        throw wireError('push_chunk_invalid', 'chunk exceeds planned_row_count');
      await tx.query(
        `WITH chunk AS (
           INSERT INTO sync.push_session_chunks (push_id, start_row_ordinal, row_count, meta, payloads)
           VALUES ($1, $2, $3, $4, $5))
         UPDATE sync.push_sessions SET next_expected_row_ordinal = $6,
                expires_at = now() + make_interval(secs => $7::float8 / 1000) WHERE push_id = $1`,
        [
          pushId,
          req.start_row_ordinal,
          staged.length,
          chunkMetaOf(staged),
          staged.map((r) => r.payloadApply ?? '').join('\n'),
          end,
          limits.pushSessionTtlMs,
        ],
      );
      return { push_id: pushId, next_expected_row_ordinal: end };
    },
    txOpts(opts.signal, PUSH_TX),
  );
}

/**
 * The statement of stageChunkAtOnce as the function `sync.push_chunk_at_once`
 * (db.ts#cachedPlanFunctionSql: planned once per connection, not for every chunk): `$1` push id,
 * `$2` user id, `$3` / `$4` the chunk's first and next row ordinal, `$5` its row count, `$6` meta,
 * `$7` payloads, `$8` the session TTL in ms; answers the session's next expected ordinal when it staged.
 */
export const PUSH_CHUNK_AT_ONCE_FN_SQL = cachedPlanFunctionSql(
  'push_chunk_at_once',
  'UUID, TEXT, BIGINT, BIGINT, INT4, TEXT, TEXT, FLOAT8',
  'next TEXT',
  `WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($2, 0))),
       s AS (
         SELECT p.push_id, p.planned_row_count, p.next_expected_row_ordinal
           FROM l, sync.push_sessions p JOIN sync.user_state u ON u.user_pk = p.user_pk
          WHERE p.push_id = $1 AND u.user_id = $2 AND p.expires_at >= now() AND p.initialization_id IS NULL
            FOR UPDATE OF p),
       ok AS (SELECT push_id FROM s WHERE next_expected_row_ordinal = $3 AND planned_row_count >= $4),
       chunk AS (
         INSERT INTO sync.push_session_chunks (push_id, start_row_ordinal, row_count, meta, payloads)
         SELECT push_id, $3, $5, $6, $7 FROM ok)
     UPDATE sync.push_sessions p SET next_expected_row_ordinal = $4,
            expires_at = now() + make_interval(secs => $8::float8 / 1000)
       FROM ok WHERE p.push_id = ok.push_id
     RETURNING p.next_expected_row_ordinal::text AS next`,
);

/**
 * The common chunk in one round trip and one implicit transaction (batch.ts): the timeouts, the user lock and
 * one statement that locks the session row (FOR UPDATE re-reads it as the previous lock holder left
 * it) and stages the chunk only when the session is the actor's, unexpired, without an
 * initialization lease, and expects exactly this chunk within its plan. Undefined when it staged
 * nothing (then nothing was written).
 */
async function stageChunkAtOnce(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  start: number,
  staged: readonly StagedRowInput[],
  opts: OpOptions,
): Promise<PushSessionChunkResponse | undefined> {
  if (!UUID_RE.test(pushId)) return undefined;
  const limits = ctx.options.limits;
  const end = start + staged.length;
  const stmts = oneTripPreamble(limits);
  stmts.push({
    sql: 'SELECT * FROM sync.push_chunk_at_once($1, $2, $3, $4, $5, $6, $7, $8)',
    params: [
      pushId,
      actor.userId,
      start,
      end,
      staged.length,
      chunkMetaOf(staged),
      staged.map((r) => r.payloadApply ?? '').join('\n'),
      limits.pushSessionTtlMs,
    ],
  });
  const r = await runStatements<{ next: string }>(
    ctx.db,
    stmts,
    opts.signal ? { signal: opts.signal } : undefined,
  );
  if (r.rows.length !== 1 || Number(r.rows[0]!.next) !== end) return undefined;
  return { push_id: pushId, next_expected_row_ordinal: end };
}
