/** Snapshot sessions (§6) and source replacement (§8.3). */
import { randomUUID } from 'node:crypto';
import { goJsonString } from '../../shared/canonical-json.js';
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
import { quoteIdent, quoteLiteral } from './db.js';
import { sourceIdProblem } from './identity.js';
import { type CatalogColumn, CURRENT_COLUMNS_SQL, payloadTextSql } from './payload-sql.js';
import { KEY_KIND_UUID } from './schema-sql.js';
import { SNAPSHOT_BLOCK_ROWS, SNAPSHOT_MISMATCH_SQLSTATE } from './snapshot-sql.js';
import { requireInitializedScopeReadOnly, sourceRetiredError } from './state.js';
import { SCOPE_COLUMN, type TableInfo } from './topology.js';

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
      // Payloads are rendered column by column from the live catalog (payload-sql.ts); the lock keeps
      // an ALTER TABLE from changing the columns between reading them and reading the rows.
      const tables = ctx.topology.tables;
      const columns: CatalogColumn[][] = tables.map(() => []);
      if (tables.length > 0) {
        await tx.query(`LOCK TABLE ${tables.map((t) => t.qualified).join(', ')} IN ACCESS SHARE MODE`);
        const cols = await tx.query<{ ord: number; name: string; type: string }>(CURRENT_COLUMNS_SQL, [
          tables.map((t) => t.qualified),
        ]);
        for (const c of cols.rows) columns[c.ord - 1]!.push({ name: c.name, type: c.type });
      }
      let offset = 0;
      let bytes = 0;
      for (const [i, info] of tables.entries()) {
        // One pass per table: live row_state entries FULL JOIN the scope's business rows. Both sides
        // must match one to one; a row on one side only is a capture inconsistency, and the row
        // expression then calls sync.snapshot_row_mismatch(), which raises SNAPSHOT_MISMATCH_SQLSTATE
        // (the whole create rolls back). No separate count queries: on freshly written rows their
        // index-only scans fetch every heap tuple and cost a third of the materialisation.
        const keyCol = `src.${quoteIdent(info.keyColumn)}`;
        const ins = await tx
          .query<{ n: string | null; bytes: string | null }>(
            `WITH ins AS (
           INSERT INTO sync.snapshot_session_blocks (snapshot_id, first_ordinal, row_count, payload_bytes, rows)
           SELECT $1, $2 + min(o), count(*), sum(octet_length(p)),
                  array_agg(CASE WHEN matched THEN ${rowWireSql(info)}
                                 ELSE sync.snapshot_row_mismatch($6, k, present) END ORDER BY o)
             FROM (SELECT row_number() OVER (ORDER BY ${keyOrderSql(info)}) AS o, k, v, p, kt, matched, present
                     FROM (SELECT coalesce(${keyBytesSql(info)}, rs.key_bytes) AS k, ${keyCol} AS kv, rs.bundle_seq AS v,
                                  ${payloadTextSql(columns[i]!, SCOPE_COLUMN, info.byteaColumns)} AS p, ${keyJsonSql(info)} AS kt,
                                  (${keyCol} IS NOT NULL AND rs.key_bytes IS NOT NULL) AS matched,
                                  CASE WHEN ${keyCol} IS NULL THEN 'row_state' ELSE 'business' END AS present
                             FROM (SELECT * FROM ${info.qualified} WHERE ${SCOPE_COLUMN} = $5) AS src
                             FULL JOIN (SELECT key_bytes, bundle_seq FROM sync.row_state
                                         WHERE user_pk = $4 AND table_id = $3 AND NOT deleted) AS rs
                               ON rs.key_bytes = ${keyBytesSql(info)}) AS t) AS u
            GROUP BY (o - 1) / ${SNAPSHOT_BLOCK_ROWS}
           RETURNING row_count, payload_bytes)
         SELECT sum(row_count)::text AS n, sum(payload_bytes)::text AS bytes FROM ins`,
            [snapshotId, offset, info.tableId, userPk, actor.userId, info.name],
          )
          .catch((err: unknown) => {
            const mismatch = findSqlState(err, SNAPSHOT_MISMATCH_SQLSTATE);
            if (!mismatch) throw err;
            throw new SyncServerError(
              'OVERSYNC_INTERNAL',
              `snapshot of ${info.name} is inconsistent: ${mismatch.message}`,
              { cause: err },
            );
          });
        bytes += Number(ins.rows[0]!.bytes ?? 0);
        const inserted = Number(ins.rows[0]!.n ?? 0);
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

/** The server error with SQLSTATE `code` on `err` or in its `cause` chain (drivers and pools wrap it). */
function findSqlState(err: unknown, code: string): Error | undefined {
  let cur: unknown = err;
  for (let i = 0; i < 8 && typeof cur === 'object' && cur !== null; i++) {
    if ((cur as { code?: unknown }).code === code) return cur as Error;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Key bytes of a source row (`src`): the order of rows within a table and the row_state join key. */
function keyBytesSql(info: TableInfo): string {
  const col = `src.${quoteIdent(info.keyColumn)}`;
  return info.keyKind === KEY_KIND_UUID ? `uuid_send(${col})` : `convert_to(${col}, 'UTF8')`;
}

/**
 * Sort key of the snapshot order (key bytes) over the joined rows `t`: a uuid sorts like its bytes
 * and compares faster as a uuid; rows without a business row raise before their position matters.
 */
function keyOrderSql(info: TableInfo): string {
  return info.keyKind === KEY_KIND_UUID ? 'kv' : 'k';
}

/** The key value of a source row as JSON text (a UUID in its canonical lower-case text form). */
function keyJsonSql(info: TableInfo): string {
  const col = `src.${quoteIdent(info.keyColumn)}`;
  return info.keyKind === KEY_KIND_UUID ? `'"' || ${col}::text || '"'` : `to_json(${col})::text`;
}

/**
 * One finished wire row (a `SnapshotRow` as compact JSON) from the key JSON `kt`, row version `v`
 * and payload text `p`: the per-table constant prefix (schema, table, key column) is encoded here once.
 */
function rowWireSql(info: TableInfo): string {
  const prefix = `{"schema":${goJsonString(info.schema)},"table":${goJsonString(info.table)},"key":{${goJsonString(info.keyColumn)}:`;
  return `${quoteLiteral(prefix)} || kt || '},"row_version":' || v::text || ',"payload":' || p || '}'`;
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
  return boundedTx(
    ctx,
    async (tx) => {
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
        snapshot_id: snapshotId,
        snapshot_bundle_seq: Number(h.snapshot_bundle_seq),
        rows: new RawJson(`[${rows}]`) as unknown as SnapshotRow[],
        next_row_ordinal: afterRowOrdinal + count,
        has_more: afterRowOrdinal + count < total,
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
