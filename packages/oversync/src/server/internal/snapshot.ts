/** Snapshot sessions (§6) and source replacement (§8.3). */
import { randomUUID } from 'node:crypto';
import { goJsonString } from '../../shared/canonical-json.js';
import type {
  SnapshotChunkResponse,
  SnapshotRow,
  SnapshotSession,
  SnapshotSessionCreateRequest,
} from '../../shared/wire.js';
import { SyncServerError, wireError } from '../errors.js';
import { SCOPE_COLUMN, type TableInfo } from './bootstrap.js';
import { RFC3339_SQL } from './connect.js';
import { type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { quoteIdent, quoteLiteral, type SyncQuerier } from './db.js';
import { RawJson } from './raw-json.js';
import { KEY_KIND_UUID } from './schema-sql.js';
import { type Actor, requireInitializedScopeReadOnly, sourceRetiredError } from './state.js';

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
 * Materialises the user's live rows into a frozen snapshot, one set-based INSERT per registered
 * table (table_id order, key bytes order within a table); payloads are `to_jsonb(row)` minus the
 * scope column with bytea as standard base64.
 */
export async function createSnapshotSession(
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
      let offset = 0;
      let bytes = 0;
      for (const info of ctx.topology.tables) {
        const keyCol = `src.${quoteIdent(info.keyColumn)}`;
        const keyBytes =
          info.keyKind === KEY_KIND_UUID ? `uuid_send(${keyCol})` : `convert_to(${keyCol}, 'UTF8')`;
        let payload = `to_jsonb(src) - '${SCOPE_COLUMN}'`;
        for (const col of info.byteaColumns) {
          const c = `src.${quoteIdent(col)}`;
          payload = `(${payload}) || jsonb_build_object('${col}', translate(encode(${c}, 'base64'), E'\\n', ''))`;
        }
        const ins = await tx.query<{ n: string; bytes: string | null }>(
          `WITH ins AS (
           INSERT INTO sync.snapshot_session_rows (snapshot_id, row_ordinal, table_id, key_bytes, bundle_seq, payload_wire)
           SELECT $1, $2 + row_number() OVER (ORDER BY k), $3, k, v, p::json
             FROM (SELECT ${keyBytes} AS k, rs.bundle_seq AS v, ${payload} AS p
                     FROM ${info.qualified} src
                     JOIN sync.row_state rs ON rs.user_pk = $4 AND rs.table_id = $3 AND rs.key_bytes = ${keyBytes}
                                           AND NOT rs.deleted
                    WHERE src._sync_scope_id = $5) AS t
           RETURNING octet_length(payload_wire::text) AS len)
         SELECT count(*)::text AS n, sum(len)::text AS bytes FROM ins`,
          [snapshotId, offset, info.tableId, userPk, actor.userId],
        );
        bytes += Number(ins.rows[0]!.bytes ?? 0);
        const inserted = Number(ins.rows[0]!.n);
        const check = await tx.query<{ live: string; rows: string }>(
          `SELECT (SELECT count(*) FROM sync.row_state WHERE user_pk = $1 AND table_id = $2 AND NOT deleted)::text AS live,
                (SELECT count(*) FROM ${info.qualified} WHERE _sync_scope_id = $3)::text AS rows`,
          [userPk, info.tableId, actor.userId],
        );
        const c = check.rows[0]!;
        if (Number(c.live) !== inserted || Number(c.rows) !== inserted) {
          throw new SyncServerError(
            'OVERSYNC_INTERNAL',
            `snapshot of ${info.name} is inconsistent: ${c.rows} business rows, ${c.live} live row_state entries, ${inserted} matched`,
          );
        }
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
      const res: SnapshotSession = {
        snapshot_id: snapshotId,
        snapshot_bundle_seq: snapshotSeq,
        row_count: offset,
        expires_at: totals.rows[0]!.expires,
      };
      if (bytes > 0) res.byte_count = bytes;
      return res;
    },
    txOpts(opts.signal, { isolation: 'repeatable read', maxAttempts: 3 }),
  );
}

interface HeaderRow {
  user_id: string;
  snapshot_bundle_seq: string;
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
    `SELECT u.user_id, s.snapshot_bundle_seq::text, (s.expires_at < now()) AS expired
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

const pageRowSqlCache = new WeakMap<readonly TableInfo[], string>();

/**
 * SQL text of one snapshot page row (`p` = sync.snapshot_session_rows) as compact JSON, by string
 * concatenation: a per-table constant prefix (schema, table, key column, encoded here once), the key,
 * row_version and payload_wire verbatim. Builds the same object as json_build_object did, at less
 * than half its cost per row. NULL for a table_id outside the topology (the caller checks).
 */
function pageRowSql(tables: readonly TableInfo[]): string {
  let sql = pageRowSqlCache.get(tables);
  if (sql !== undefined) return sql;
  const branches = tables.map((t) => {
    const prefix = `{"schema":${goJsonString(t.schema)},"table":${goJsonString(t.table)},"key":{${goJsonString(t.keyColumn)}:`;
    const key =
      t.keyKind === KEY_KIND_UUID
        ? `'"' || encode(p.key_bytes, 'hex')::uuid::text || '"'`
        : `to_json(convert_from(p.key_bytes, 'UTF8'))::text`;
    return `WHEN ${t.tableId} THEN ${quoteLiteral(prefix)} || ${key}`;
  });
  sql = `(CASE p.table_id ${branches.join(' ')} END) || '},"row_version":' || p.bundle_seq::text || ',"payload":' || p.payload_wire::text || '}'`;
  pageRowSqlCache.set(tables, sql);
  return sql;
}

export async function getSnapshotChunk(
  ctx: ServiceContext,
  actor: Actor,
  snapshotId: string,
  afterRowOrdinal: number,
  maxRows: number,
  opts: OpOptions,
): Promise<SnapshotChunkResponse> {
  const eff = Math.min(maxRows, ctx.options.limits.maxRowsPerSnapshotChunk);
  return ctx.db.runTx(
    async (tx) => {
      const h = await loadHeader(tx, actor, snapshotId, false);
      if (h.expired)
        throw wireError('snapshot_session_expired', `snapshot session ${snapshotId} has expired`);
      // The page's JSON is built by PostgreSQL (payload_wire embedded verbatim, see pageRowSql);
      // the HTTP layer sends it as is, programmatic callers get it parsed. Row ordinals are contiguous from 1, so
      // the page is a bounded ordinal range (plus one row telling has_more): with the stale
      // statistics of freshly materialised rows an open range with LIMIT made the planner
      // bitmap-scan and sort every remaining row for each page.
      const r = await tx.query<{ n: number; unknown: number; rows: string | null }>(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE p.table_id <> ALL($4::int4[]))::int AS unknown,
                string_agg(${pageRowSql(ctx.topology.tables)}, ',' ORDER BY p.row_ordinal)
                  FILTER (WHERE p.row_ordinal <= $2::int8 + $3::int8) AS rows
           FROM sync.snapshot_session_rows p
          WHERE p.snapshot_id = $1 AND p.row_ordinal > $2::int8 AND p.row_ordinal <= $2::int8 + $3::int8 + 1`,
        [snapshotId, afterRowOrdinal, eff, ctx.topology.tables.map((t) => t.tableId)],
      );
      if ((r.rows[0]?.unknown ?? 0) > 0) {
        throw new SyncServerError(
          'OVERSYNC_INTERNAL',
          `snapshot session ${snapshotId} holds rows of an unregistered table`,
        );
      }
      const fetched = r.rows[0]?.n ?? 0;
      const count = Math.min(fetched, eff);
      return {
        snapshot_id: snapshotId,
        snapshot_bundle_seq: Number(h.snapshot_bundle_seq),
        rows: new RawJson(`[${r.rows[0]?.rows ?? ''}]`) as unknown as SnapshotRow[],
        next_row_ordinal: afterRowOrdinal + count,
        has_more: fetched > eff,
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
  await ctx.db.runTx(
    async (tx) => {
      await loadHeader(tx, actor, snapshotId, true);
      await tx.query('DELETE FROM sync.snapshot_sessions WHERE snapshot_id = $1', [snapshotId]);
    },
    txOpts(opts.signal, { isolation: 'read committed' }),
  );
}
