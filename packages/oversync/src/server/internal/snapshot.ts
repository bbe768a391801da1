import { randomUUID } from 'node:crypto';
import { sleep } from '@x/core';
import type {
  SnapshotChunkResponse,
  SnapshotRow,
  SnapshotSession,
  SnapshotSessionCreateRequest,
} from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { SyncServerError, wireError } from '../errors.js';
import { RawJson } from '../raw-json.js';
import { RFC3339_SQL } from './connect.js';
import { boundedTx, type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { sourceIdProblem } from './identity.js';
import { insertTableBlocks, lockAndReadColumns, sessionAnswer } from './snapshot-blocks.js';
import { BUILD_TASK, createPipelined, MAX_BUILDS_PER_PROCESS } from './snapshot-build.js';
import { BUILD_LOCK_CLASS, SNAPSHOT_BLOCK_ROWS } from './snapshot-sql.js';
import { requireInitializedScopeReadOnly, sourceRetiredError } from './state.js';

const REPLACEMENT_REASONS = new Set([
  'history_pruned',
  'source_sequence_out_of_order',
  'source_sequence_changed',
  'source_retired',
]);

async function applySourceReplacement(
  tx: SyncQuerier,
  actor: Actor,
  userPk: string,
  rep: NonNullable<SnapshotSessionCreateRequest['source_replacement']>,
): Promise<void> {
  const previous = rep.previous_source_id.trim();
  const next = rep.new_source_id.trim();
  const reason = rep.reason.trim();
  if (previous !== actor.sourceId) {
    throw wireError('snapshot_session_invalid', 'previous_source_id must match authenticated source_id');
  }
  if (!next) throw wireError('snapshot_session_invalid', 'new_source_id is required for source replacement');
  const problem = sourceIdProblem(next);
  if (problem) throw wireError('snapshot_session_invalid', `new_source_id ${problem}`);
  if (next === previous)
    throw wireError('snapshot_session_invalid', 'new_source_id must differ from previous_source_id');
  if (!REPLACEMENT_REASONS.has(reason)) {
    throw wireError('snapshot_session_invalid', 'source replacement reason is unsupported');
  }
  const r = await tx.query<{ source_id: string; state: string; replaced_by_source_id: string }>(
    `SELECT source_id, state, replaced_by_source_id FROM sync.source_state
      WHERE user_pk = $1 AND source_id = ANY($2::text[]) ORDER BY source_id FOR UPDATE`,
    [userPk, [previous, next]],
  );
  const prev = r.rows.find((x) => x.source_id === previous);
  const nw = r.rows.find((x) => x.source_id === next);
  if (prev?.state === 'retired') {
    if (prev.replaced_by_source_id !== next) {
      throw sourceRetiredError(actor.userId, previous, prev.replaced_by_source_id);
    }
    if (!nw) {
      await tx.query(
        `INSERT INTO sync.source_state (user_pk, source_id, state) VALUES ($1, $2, 'reserved')`,
        [userPk, next],
      );
    } else if (nw.state === 'retired') {
      throw wireError(
        'source_replacement_invalid',
        `replacement source ${next} is not available for rotated rebuild`,
      );
    }
    return; // reserved / active: an idempotent retry of the same rotation
  }
  if (nw) {
    throw wireError(
      'source_replacement_invalid',
      `replacement source ${next} is already known for user ${actor.userId}`,
    );
  }
  await tx.query(`INSERT INTO sync.source_state (user_pk, source_id, state) VALUES ($1, $2, 'reserved')`, [
    userPk,
    next,
  ]);
  await tx.query(
    `INSERT INTO sync.source_state (user_pk, source_id, state, replaced_by_source_id, retirement_reason)
     VALUES ($1, $2, 'retired', $3, $4)
     ON CONFLICT (user_pk, source_id) DO UPDATE SET state = 'retired',
       replaced_by_source_id = EXCLUDED.replaced_by_source_id, retirement_reason = EXCLUDED.retirement_reason`,
    [userPk, previous, next, reason],
  );
}

/**
 * Materialises the user's live rows into a frozen snapshot before answering, one set-based INSERT
 * per registered table (table_id order, key bytes order within a table); payloads are
 * `to_jsonb(row)` minus the scope column with bytea as standard base64.
 */
async function createSynchronously(
  ctx: ServiceContext,
  actor: Actor,
  req: SnapshotSessionCreateRequest,
  opts: OpOptions,
): Promise<SnapshotSession> {
  const limits = ctx.options.limits;
  return ctx.db.runTx(
    async (tx) => {
      await tx.query('DELETE FROM sync.snapshot_sessions WHERE expires_at <= now()');
      await tx.query(`SET LOCAL work_mem = '64MB'`); // the key sort stays in memory
      // Row-count estimates of freshly written row_state are often tiny, which makes the planner pick
      // a nested loop that compares every business row with every row_state entry; hash it instead.
      await tx.query('SET LOCAL enable_nestloop = off');
      const userPk = await requireInitializedScopeReadOnly(tx, actor.userId);
      if (req.source_replacement) await applySourceReplacement(tx, actor, userPk, req.source_replacement);
      const us = await tx.query<{ seq: string }>(
        'SELECT (next_bundle_seq - 1)::text AS seq FROM sync.user_state WHERE user_pk = $1',
        [userPk],
      );
      const snapshotSeq = Number(us.rows[0]!.seq);
      const snapshotId = randomUUID();
      await tx.query(
        `INSERT INTO sync.snapshot_sessions (snapshot_id, user_pk, snapshot_bundle_seq, expires_at)
       VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8 / 1000))`,
        [snapshotId, userPk, snapshotSeq, limits.snapshotSessionTtlMs],
      );
      const tables = ctx.topology.tables;
      const columns = await lockAndReadColumns(tx, tables);
      let offset = 0;
      let bytes = 0;
      for (const [i, info] of tables.entries()) {
        // A mismatch rolls the whole create back.
        const ins = await insertTableBlocks(tx, info, columns[i]!, snapshotId, offset, userPk, actor.userId);
        bytes += ins.bytes;
        const inserted = ins.rows;
        offset += inserted;
        if (limits.maxRowsPerSnapshotSession > 0 && offset > limits.maxRowsPerSnapshotSession) {
          // Fix of the reference (§15.5): a clean 4xx instead of a 500.
          throw wireError(
            'snapshot_session_invalid',
            `snapshot row count exceeds max_rows_per_snapshot_session ${limits.maxRowsPerSnapshotSession}`,
            { details: { dimension: 'rows', limit: limits.maxRowsPerSnapshotSession } },
          );
        }
      }
      const totals = await tx.query<{ expires: string }>(
        `UPDATE sync.snapshot_sessions s SET row_count = $2, byte_count = $3 WHERE snapshot_id = $1
        RETURNING ${RFC3339_SQL('s.expires_at')} AS expires`,
        [snapshotId, offset, bytes],
      );
      if (limits.maxBytesPerSnapshotSession > 0 && bytes > limits.maxBytesPerSnapshotSession) {
        throw wireError(
          'snapshot_session_invalid',
          `snapshot byte count exceeds max_bytes_per_snapshot_session ${limits.maxBytesPerSnapshotSession}`,
          { details: { dimension: 'bytes', limit: limits.maxBytesPerSnapshotSession } },
        );
      }
      return sessionAnswer(snapshotId, snapshotSeq, offset, bytes, totals.rows[0]!.expires);
    },
    txOpts(opts.signal, { isolation: 'repeatable read', maxAttempts: 3 }),
  );
}

/**
 * POST /sync/snapshot-sessions. A session of `limits.snapshotPipelineMinRows` rows or more (by a
 * cheap estimate: the scope's live row_state entries) is pipelined (`createPipelined`): answered
 * once its exact row and byte counts are known, its rows written in the background while the client
 * pages. Source replacement (atomic with the snapshot), small scopes, and creates beyond
 * MAX_BUILDS_PER_PROCESS running builds write the whole session before answering, as before.
 */
export async function createSnapshotSession(
  ctx: ServiceContext,
  actor: Actor,
  req: SnapshotSessionCreateRequest,
  opts: OpOptions,
): Promise<SnapshotSession> {
  const min = ctx.options.limits.snapshotPipelineMinRows;
  const bg = ctx.background;
  if (req.source_replacement || min === 0 || !bg || bg.running(BUILD_TASK) >= MAX_BUILDS_PER_PROCESS) {
    return createSynchronously(ctx, actor, req, opts);
  }
  const est = await ctx.db.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM sync.row_state
      WHERE user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = $1) AND NOT deleted`,
    [actor.userId],
    opts.signal ? { signal: opts.signal } : undefined,
  );
  if (Number(est.rows[0]?.n ?? 0) < min) return createSynchronously(ctx, actor, req, opts);
  return createPipelined(ctx, bg, actor, opts);
}

interface HeaderRow {
  user_id: string;
  snapshot_bundle_seq: string;
  row_count: string;
  expired: boolean;
}

async function loadHeader(
  tx: SyncQuerier,
  actor: Actor,
  snapshotId: string,
  lock: boolean,
): Promise<HeaderRow> {
  // Fix of the reference: a non-UUID id is 404 (the reference's cast error surfaced as a 500).
  if (!UUID_RE.test(snapshotId)) {
    throw wireError('snapshot_session_not_found', `snapshot session ${snapshotId} not found`);
  }
  const r = await tx.query<HeaderRow>(
    `SELECT u.user_id, s.snapshot_bundle_seq::text, s.row_count::text, (s.expires_at < now()) AS expired
       FROM sync.snapshot_sessions s JOIN sync.user_state u ON u.user_pk = s.user_pk
      WHERE s.snapshot_id = $1${lock ? ' FOR UPDATE OF s' : ''}`,
    [snapshotId],
  );
  const h = r.rows[0];
  if (!h) throw wireError('snapshot_session_not_found', `snapshot session ${snapshotId} not found`);
  if (h.user_id !== actor.userId) {
    throw wireError('snapshot_session_forbidden', `snapshot session ${snapshotId} is forbidden`);
  }
  return h;
}

/** A chunk's answer, or why its blocks are not all there yet. */
type ChunkAttempt =
  | { readonly page: SnapshotChunkResponse }
  | { readonly building: true; readonly alive: boolean };

/**
 * GET /sync/snapshot-sessions/{id}. A page is a slice of the stored blocks; a page of a pipelined
 * session whose blocks are still being written waits for them, polling in fresh transactions (any
 * process: the blocks, the build row and the build's advisory lock are all in the database), for up
 * to `limits.snapshotChunkWaitMs` (then 503, retryable). A failed build answers its failure (a
 * mismatch: 500, as a synchronous create answers it); a dead build (its lock gone while its row
 * still says `building`, seen twice in a row) deletes the session and answers 404, so the client
 * creates a new one.
 */
export async function getSnapshotChunk(
  ctx: ServiceContext,
  actor: Actor,
  snapshotId: string,
  afterRowOrdinal: number,
  maxRows: number,
  opts: OpOptions,
): Promise<SnapshotChunkResponse> {
  const deadline = performance.now() + ctx.options.limits.snapshotChunkWaitMs;
  let pause = 2;
  let lockSeenGone = false;
  for (;;) {
    const r = await chunkAttempt(ctx, actor, snapshotId, afterRowOrdinal, maxRows, opts);
    if ('page' in r) return r.page;
    if (!r.alive) {
      // The lock is released after the build row says `done` or `failed`: a second look, in a
      // snapshot taken after the lock was seen gone, tells a finished build from a dead one.
      if (lockSeenGone) {
        await ctx.db.query('DELETE FROM sync.snapshot_sessions WHERE snapshot_id = $1', [snapshotId]);
        throw wireError(
          'snapshot_session_not_found',
          `snapshot session ${snapshotId} not found (its build stopped before it finished)`,
        );
      }
      lockSeenGone = true;
      continue;
    }
    lockSeenGone = false;
    if (performance.now() >= deadline) {
      throw wireError('service_unavailable', `snapshot session ${snapshotId} is still being written`, {
        retryable: true,
      });
    }
    await sleep(pause, opts.signal ? { signal: opts.signal } : {});
    pause = Math.min(pause * 2, 50);
  }
}

async function chunkAttempt(
  ctx: ServiceContext,
  actor: Actor,
  snapshotId: string,
  afterRowOrdinal: number,
  maxRows: number,
  opts: OpOptions,
): Promise<ChunkAttempt> {
  const eff = Math.min(maxRows, ctx.options.limits.maxRowsPerSnapshotChunk);
  return boundedTx(
    ctx,
    async (tx): Promise<ChunkAttempt> => {
      const h = await loadHeader(tx, actor, snapshotId, false);
      if (h.expired)
        throw wireError('snapshot_session_expired', `snapshot session ${snapshotId} has expired`);
      // A page is a slice of the stored blocks (see snapshot-sql.ts), joined by PostgreSQL; the HTTP
      // layer sends it as is, programmatic callers get it parsed. Ordinals are contiguous from 1 and
      // a block holds at most SNAPSHOT_BLOCK_ROWS rows, so the blocks overlapping (after, after + eff]
      // are an index range on (snapshot_id, first_ordinal).
      const total = Number(h.row_count);
      const count = Math.max(0, Math.min(eff, total - afterRowOrdinal));
      let rows = '';
      if (count > 0) {
        const r = await tx.query<{ n: number | null; rows: string | null }>(
          `SELECT sum(hi - lo + 1)::int AS n,
                  string_agg(array_to_string(b.rows[lo:hi], ','), ',' ORDER BY b.first_ordinal) AS rows
             FROM sync.snapshot_session_blocks b,
                  LATERAL (SELECT greatest(1, $2::int8 - b.first_ordinal + 2)::int AS lo,
                                  least(b.row_count, $3::int8 - b.first_ordinal + 1)::int AS hi) AS s
            WHERE b.snapshot_id = $1 AND b.first_ordinal <= $3::int8
              AND b.first_ordinal > $2::int8 - ${SNAPSHOT_BLOCK_ROWS} AND b.first_ordinal + b.row_count > $2::int8 + 1`,
          [snapshotId, afterRowOrdinal, afterRowOrdinal + count],
        );
        const n = r.rows[0]?.n ?? 0;
        if (n !== count) {
          const build = await tx.query<{
            state: string;
            failure: string | null;
            message: string | null;
            alive: boolean;
          }>(
            `SELECT b.state, b.failure, b.message,
                    EXISTS (SELECT 1 FROM pg_locks l
                             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $2::int::oid
                               AND l.objid = b.lock_key::oid AND l.objsubid = 2
                               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS alive
               FROM sync.snapshot_session_builds b WHERE b.snapshot_id = $1`,
            [snapshotId, BUILD_LOCK_CLASS],
          );
          const b = build.rows[0];
          if (b?.state === 'building') return { building: true, alive: b.alive };
          if (b?.state === 'failed') {
            if (b.failure === 'mismatch')
              throw new SyncServerError('OVERSYNC_INTERNAL', b.message ?? 'snapshot is inconsistent');
            throw wireError(
              'snapshot_session_not_found',
              `snapshot session ${snapshotId} not found (its build failed: ${b.message ?? 'unknown error'})`,
            );
          }
        }
        if (n === 0) {
          // A session materialised by a server version before the block layout (its rows live in
          // the old table), or emptied by a PostgreSQL crash: the client starts a new snapshot.
          throw wireError('snapshot_session_not_found', `snapshot session ${snapshotId} not found`);
        }
        if (n !== count) {
          throw new SyncServerError(
            'OVERSYNC_INTERNAL',
            `snapshot session ${snapshotId} returned ${n} rows for a page of ${count}`,
          );
        }
        rows = r.rows[0]?.rows ?? '';
      }
      return {
        page: {
          snapshot_id: snapshotId,
          snapshot_bundle_seq: Number(h.snapshot_bundle_seq),
          rows: new RawJson(`[${rows}]`) as unknown as SnapshotRow[],
          next_row_ordinal: afterRowOrdinal + count,
          has_more: afterRowOrdinal + count < total,
        },
      };
    },
    txOpts(opts.signal, { isolation: 'repeatable read', readOnly: true }),
  );
}

export async function deleteSnapshotSession(
  ctx: ServiceContext,
  actor: Actor,
  snapshotId: string,
  opts: OpOptions,
): Promise<void> {
  await boundedTx(
    ctx,
    async (tx) => {
      await loadHeader(tx, actor, snapshotId, true);
      await tx.query('DELETE FROM sync.snapshot_sessions WHERE snapshot_id = $1', [snapshotId]);
    },
    txOpts(opts.signal, { isolation: 'read committed' }),
  );
}
