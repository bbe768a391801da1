/** Push sessions (§4): create, chunk, commit, delete. */
import { randomUUID } from 'node:crypto';
import type {
  PushConflictDetails,
  PushSessionChunkRequest,
  PushSessionChunkResponse,
  PushSessionCommitResponse,
  PushSessionCreateRequest,
  PushSessionCreateResponse,
} from '../../shared/wire.js';
import { wireError } from '../errors.js';
import type { TableInfo } from './bootstrap.js';
import { finalizeCapturedBundle, jsonArrayOf } from './capture.js';
import { type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { quoteIdent, type SyncQuerier } from './db.js';
import {
  keyStringOf,
  opName,
  PushValidationError,
  type StagedRowInput,
  toWirePayload,
  validatePushRows,
} from './rows.js';
import { OP_DELETE, OP_INSERT, SCOPE_INITIALIZING, SCOPE_UNINITIALIZED } from './schema-sql.js';
import {
  type Actor,
  activateSourceState,
  applyRetention,
  checkSourceSequence,
  ensureUserScope,
  loadScopeForUpdate,
  loadSourceState,
  lockUser,
  markScopeInitialized,
  requireActiveInitializationLease,
  setBundleContext,
  sourceRetiredError,
} from './state.js';

const PUSH_TX = { isolation: 'read committed', maxAttempts: 3 } as const;

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
  return ctx.db.runTx(
    async (tx) => {
      await lockUser(tx, actor.userId, limits.uploadLockTimeoutMs);
      await tx.query('DELETE FROM sync.push_sessions WHERE expires_at <= now()');
      const userPk = await ensureUserScope(tx, actor.userId);
      const scope = await loadScopeForUpdate(tx, userPk);
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

      const committed = await tx.query<{ bundle_seq: string; row_count: string; bundle_hash: string }>(
        `SELECT b.bundle_seq::text, b.row_count::text, encode(b.bundle_hash, 'hex') AS bundle_hash
         FROM sync.bundle_log b JOIN sync.user_state u ON u.user_pk = b.user_pk
        WHERE b.user_pk = $1 AND b.source_id = $2 AND b.source_bundle_id = $3 AND b.bundle_seq > u.retained_bundle_floor`,
        [userPk, actor.sourceId, req.source_bundle_id],
      );
      const c = committed.rows[0];
      if (c) {
        return {
          status: 'already_committed',
          bundle_seq: Number(c.bundle_seq),
          source_id: actor.sourceId,
          source_bundle_id: req.source_bundle_id,
          row_count: Number(c.row_count),
          bundle_hash: c.bundle_hash,
        };
      }
      const src = await loadSourceState(tx, userPk, actor.sourceId, false);
      checkSourceSequence(actor, src, req.source_bundle_id);
      await tx.query(
        'DELETE FROM sync.push_sessions WHERE user_pk = $1 AND source_id = $2 AND source_bundle_id = $3',
        [userPk, actor.sourceId, req.source_bundle_id],
      );
      const pushId = randomUUID();
      await tx.query(
        `INSERT INTO sync.push_sessions (push_id, user_pk, source_id, source_bundle_id, planned_row_count,
         next_expected_row_ordinal, initialization_id, expires_at)
       VALUES ($1, $2, $3, $4, $5, 0, $6, now() + make_interval(secs => $7::float8 / 1000))`,
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

interface SessionRow {
  user_pk: string;
  user_id: string;
  source_id: string;
  source_bundle_id: string;
  planned_row_count: string;
  next_expected_row_ordinal: string;
  initialization_id: string | null;
  expired: boolean;
}

/** Loads and locks a push session: 404 unknown (or non-UUID id), 403 other user, 410 expired. */
async function loadSessionForUpdate(tx: SyncQuerier, actor: Actor, pushId: string): Promise<SessionRow> {
  if (!UUID_RE.test(pushId)) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  const r = await tx.query<SessionRow>(
    `SELECT p.user_pk::text, u.user_id, p.source_id, p.source_bundle_id::text, p.planned_row_count::text,
            p.next_expected_row_ordinal::text, p.initialization_id::text, (p.expires_at < now()) AS expired
       FROM sync.push_sessions p JOIN sync.user_state u ON u.user_pk = p.user_pk
      WHERE p.push_id = $1 FOR UPDATE OF p`,
    [pushId],
  );
  const s = r.rows[0];
  if (!s) throw wireError('push_session_not_found', `push session ${pushId} not found`);
  if (s.user_id !== actor.userId)
    throw wireError('push_session_forbidden', `push session ${pushId} is forbidden`);
  if (s.expired) throw wireError('push_session_expired', `push session ${pushId} has expired`);
  return s;
}

function chunkInvalid(e: unknown): never {
  if (e instanceof PushValidationError) throw wireError('push_chunk_invalid', e.message);
  throw e;
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
  const rows = req.rows ?? [];
  if (rows.length === 0) throw wireError('push_chunk_invalid', 'rows must not be empty');
  if (rows.length > limits.maxRowsPerPushChunk) {
    throw wireError(
      'push_chunk_invalid',
      `rows length ${rows.length} exceeds max_rows_per_push_chunk ${limits.maxRowsPerPushChunk}`,
    );
  }
  let staged: StagedRowInput[];
  try {
    staged = validatePushRows(ctx.topology, rows);
  } catch (e) {
    chunkInvalid(e);
  }
  return ctx.db.runTx(
    async (tx) => {
      await lockUser(tx, actor.userId, limits.uploadLockTimeoutMs);
      const s = await loadSessionForUpdate(tx, actor, pushId);
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
        `INSERT INTO sync.push_session_rows (push_id, row_ordinal, table_id, key_bytes, op_code, base_bundle_seq, payload_apply)
       SELECT $1, $2 + r.ord - 1, r.table_id, r.key_bytes, r.op_code, r.base,
              CASE WHEN r.op_code = 3 THEN NULL ELSE r.payload END
         FROM ROWS FROM (unnest($3::int4[]), unnest($4::bytea[]), unnest($5::int2[]), unnest($6::int8[]),
                         json_array_elements($7::json))
              WITH ORDINALITY AS r(table_id, key_bytes, op_code, base, payload, ord)`,
        [
          pushId,
          req.start_row_ordinal,
          staged.map((r) => r.info.tableId),
          staged.map((r) => r.keyBytes),
          staged.map((r) => r.opCode),
          staged.map((r) => r.baseRowVersion),
          jsonArrayOf(staged.map((r) => r.payloadApply)),
        ],
      );
      await tx.query(
        `UPDATE sync.push_sessions SET next_expected_row_ordinal = $2,
              expires_at = now() + make_interval(secs => $3::float8 / 1000) WHERE push_id = $1`,
        [pushId, end, limits.pushSessionTtlMs],
      );
      return { push_id: pushId, next_expected_row_ordinal: end };
    },
    txOpts(opts.signal, PUSH_TX),
  );
}

interface StagedRow {
  row_ordinal: string;
  table_id: number;
  key_bytes: Buffer;
  op_code: number;
  base: string;
  /** Sorted payload column names, comma-separated (null for DELETE). */
  cols: string | null;
}

async function serverRowOf(
  tx: SyncQuerier,
  info: TableInfo,
  userId: string,
  keyString: string,
): Promise<unknown> {
  const r = await tx.query<{ doc: string }>(
    `SELECT to_jsonb(src)::text AS doc FROM ${info.qualified} src
      WHERE src.${quoteIdent(info.keyColumn)} = $1::${info.keyKind === 1 ? 'uuid' : 'text'}
        AND src._sync_scope_id = $2`,
    [keyString, userId],
  );
  const doc = r.rows[0]?.doc;
  return doc === undefined ? null : toWirePayload(info, JSON.parse(doc) as Record<string, unknown>);
}

interface ApplyRow {
  info: TableInfo;
  op: number;
  keyString: string;
  /** Staged row_ordinal (the payload stays in sync.push_session_rows and is applied from there). */
  ordinal: number;
  /** Sorted payload columns (validated against the table's catalogued columns). */
  cols: string[];
  sig: string;
}

/**
 * Applies staged rows in staged order straight from sync.push_session_rows (payloads never travel
 * back to the server process); consecutive INSERTs of one table and column set go in one statement
 * whose ORDER BY keeps the captured order equal to the uploaded order.
 */
async function applyRows(
  tx: SyncQuerier,
  userId: string,
  pushId: string,
  rows: readonly ApplyRow[],
): Promise<void> {
  const staged = (cols: string[]) => cols.map(quoteIdent);
  let i = 0;
  while (i < rows.length) {
    const r = rows[i]!;
    const keyCast = r.info.keyKind === 1 ? 'uuid' : 'text';
    const keyCol = quoteIdent(r.info.keyColumn);
    const populate = `jsonb_populate_record(NULL::${r.info.qualified}, sr.payload_apply::jsonb)`;
    if (r.op === OP_INSERT) {
      let j = i + 1;
      while (
        j < rows.length &&
        rows[j]!.op === OP_INSERT &&
        rows[j]!.info === r.info &&
        rows[j]!.sig === r.sig
      )
        j++;
      const colList = staged(r.cols);
      await tx.query(
        `INSERT INTO ${r.info.qualified} (_sync_scope_id, ${colList.join(', ')})
         SELECT $1, ${colList.map((c) => `p.${c}`).join(', ')}
           FROM sync.push_session_rows sr CROSS JOIN LATERAL ${populate} AS p
          WHERE sr.push_id = $2 AND sr.row_ordinal >= $3 AND sr.row_ordinal < $4
          ORDER BY sr.row_ordinal`,
        [userId, pushId, r.ordinal, rows[j - 1]!.ordinal + 1],
      );
      i = j;
      continue;
    }
    if (r.op === OP_DELETE) {
      await tx.query(
        `DELETE FROM ${r.info.qualified} WHERE ${keyCol} = $1::${keyCast} AND _sync_scope_id = $2`,
        [r.keyString, userId],
      );
    } else {
      const setCols = r.cols.filter((c) => c !== r.info.keyColumn);
      if (setCols.length === 0) setCols.push(r.info.keyColumn);
      await tx.query(
        `UPDATE ${r.info.qualified} AS t SET ${setCols.map((c) => `${quoteIdent(c)} = p.${quoteIdent(c)}`).join(', ')}
           FROM sync.push_session_rows sr CROSS JOIN LATERAL ${populate} AS p
          WHERE sr.push_id = $1 AND sr.row_ordinal = $2 AND t.${keyCol} = $3::${keyCast} AND t._sync_scope_id = $4`,
        [pushId, r.ordinal, r.keyString, userId],
      );
    }
    i++;
  }
}

export async function commitPushSession(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
): Promise<PushSessionCommitResponse> {
  const limits = ctx.options.limits;
  const topology = ctx.topology;
  return ctx.db.runTx(
    async (tx) => {
      await lockUser(tx, actor.userId, limits.uploadLockTimeoutMs);
      const s = await loadSessionForUpdate(tx, actor, pushId);
      const staged = await tx.query<StagedRow>(
        `SELECT row_ordinal::text, table_id, key_bytes, op_code, base_bundle_seq::text AS base,
                CASE WHEN payload_apply IS NULL THEN NULL
                     ELSE (SELECT string_agg(k, ',' ORDER BY k COLLATE "C") FROM json_object_keys(payload_apply) AS k) END AS cols
         FROM sync.push_session_rows r WHERE push_id = $1 ORDER BY r.row_ordinal`,
        [pushId],
      );
      const planned = Number(s.planned_row_count);
      if (Number(s.next_expected_row_ordinal) !== planned || staged.rows.length !== planned) {
        throw wireError(
          'push_commit_invalid',
          `staged row count ${staged.rows.length} does not match planned_row_count ${planned}`,
        );
      }
      const seen = new Set<string>();
      const apply: ApplyRow[] = [];
      for (let i = 0; i < staged.rows.length; i++) {
        const r = staged.rows[i]!;
        if (Number(r.row_ordinal) !== i) {
          throw wireError('push_commit_invalid', `staged rows are not contiguous at row_ordinal ${i}`);
        }
        const info = topology.byId.get(r.table_id)!;
        const keyString = keyStringOf(info, r.key_bytes);
        const id = `${r.table_id}:${r.key_bytes.toString('hex')}`;
        if (seen.has(id)) {
          throw wireError(
            'push_commit_invalid',
            `duplicate target row in staged push session: ${info.name} ${keyString}`,
          );
        }
        seen.add(id);
        const cols = r.cols === null ? [] : r.cols.split(',');
        for (const c of cols) {
          if (!info.columns.has(c))
            throw wireError('push_commit_invalid', `staged payload has unknown column ${c}`);
        }
        apply.push({ info, op: r.op_code, keyString, ordinal: i, cols, sig: r.cols ?? '' });
      }
      await tx.query('SET CONSTRAINTS ALL DEFERRED');
      const initializationId = s.initialization_id ?? '';
      if (initializationId) {
        await requireActiveInitializationLease(tx, s.user_pk, s.source_id, initializationId, limits);
      }
      const sessionActor: Actor = { userId: actor.userId, sourceId: s.source_id };
      const sourceBundleId = Number(s.source_bundle_id);
      const src = await loadSourceState(tx, s.user_pk, s.source_id, true);
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
      });

      // Conflict detection on base_row_version, in staged order; the first conflict wins.
      const states = await tx.query<{
        table_id: number;
        key_bytes: Buffer;
        bundle_seq: string;
        deleted: boolean;
      }>(
        `SELECT s.table_id, s.key_bytes, s.bundle_seq::text, s.deleted
         FROM unnest($2::int4[], $3::bytea[]) AS r(table_id, key_bytes)
         JOIN sync.row_state s ON s.user_pk = $1 AND s.table_id = r.table_id AND s.key_bytes = r.key_bytes`,
        [s.user_pk, staged.rows.map((r) => r.table_id), staged.rows.map((r) => r.key_bytes)],
      );
      const stateOf = new Map<string, { version: number; deleted: boolean }>();
      for (const st of states.rows) {
        stateOf.set(`${st.table_id}:${st.key_bytes.toString('hex')}`, {
          version: Number(st.bundle_seq),
          deleted: st.deleted,
        });
      }
      for (let i = 0; i < staged.rows.length; i++) {
        const r = staged.rows[i]!;
        const a = apply[i]!;
        const st = stateOf.get(`${r.table_id}:${r.key_bytes.toString('hex')}`);
        const base = Number(r.base);
        const msg = conflictMessage(a, st, base);
        if (msg !== undefined) {
          const live = st !== undefined && !st.deleted;
          const conflict: PushConflictDetails = {
            schema: a.info.schema,
            table: a.info.table,
            key: { [a.info.keyColumn]: a.keyString },
            op: opName(a.op),
            base_row_version: base,
            server_row_version: st?.version ?? 0,
            server_row_deleted: st?.deleted ?? false,
            server_row: live ? await serverRowOf(tx, a.info, actor.userId, a.keyString) : null,
          };
          throw wireError('push_conflict', msg, { body: { conflict }, details: { conflict } });
        }
      }

      await applyRows(tx, actor.userId, pushId, apply);
      const bundle = await finalizeCapturedBundle(
        tx,
        topology,
        s.user_pk,
        { sourceId: s.source_id, sourceBundleId },
        ctx.notifyChannel,
      );
      if (!bundle)
        throw wireError('push_commit_invalid', 'push session produced no captured business-table effects');
      await activateSourceState(tx, s.user_pk, sessionActor.sourceId, sourceBundleId);
      await applyRetention(tx, s.user_pk, limits);
      await tx.query('DELETE FROM sync.push_sessions WHERE push_id = $1', [pushId]);
      if (initializationId) await markScopeInitialized(tx, s.user_pk, s.source_id);
      return {
        bundle_seq: bundle.bundle_seq,
        source_id: bundle.source_id,
        source_bundle_id: bundle.source_bundle_id,
        row_count: bundle.row_count,
        bundle_hash: bundle.bundle_hash,
      };
    },
    txOpts(opts.signal, PUSH_TX),
  );
}

function conflictMessage(
  a: ApplyRow,
  st: { version: number; deleted: boolean } | undefined,
  base: number,
): string | undefined {
  const where = `${a.info.name} ${a.keyString}`;
  if (a.op === OP_INSERT) {
    if (!st)
      return base === 0
        ? undefined
        : `insert conflict on ${where}: expected missing row at version 0, got ${base}`;
    if (base !== st.version)
      return `insert conflict on ${where}: expected base_row_version ${st.version}, got ${base}`;
    if (!st.deleted) return `insert conflict on ${where}: row already exists at version ${st.version}`;
    return undefined;
  }
  const verb = a.op === OP_DELETE ? 'delete' : 'update';
  if (!st || st.deleted) return `${verb} conflict on ${where}: row does not exist`;
  if (base !== st.version) return `${verb} conflict on ${where}: expected version ${st.version}, got ${base}`;
  return undefined;
}

export async function deletePushSession(
  ctx: ServiceContext,
  actor: Actor,
  pushId: string,
  opts: OpOptions,
): Promise<void> {
  await ctx.db.runTx(
    async (tx) => {
      await loadSessionForUpdate(tx, actor, pushId);
      await tx.query('DELETE FROM sync.push_sessions WHERE push_id = $1', [pushId]);
    },
    txOpts(opts.signal, { isolation: 'read committed' }),
  );
}
