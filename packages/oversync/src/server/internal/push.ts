/** Push sessions (§4): create, chunk, commit, delete. */
import { randomUUID } from 'node:crypto';
import { computeBundleHash, type HashableBundleRow } from '../../shared/bundle-hash.js';
import { goEscapeJsonText } from '../../shared/canonical-json.js';
import type {
  PushSessionChunkRequest,
  PushSessionChunkResponse,
  PushSessionCommitResponse,
  PushSessionCreateRequest,
  PushSessionCreateResponse,
} from '../../shared/wire.js';
import { wireError } from '../errors.js';
import { SCOPE_COLUMN, type TableInfo, type Topology } from './bootstrap.js';
import {
  allocateBundleSeq,
  type DirectInsertEvent,
  finalizeCapturedBundle,
  notifyBundle,
  PAYLOAD_PRESENT,
} from './capture.js';
import { boundedTx, type OpOptions, type ServiceContext, txOpts, UUID_RE } from './context.js';
import { quoteIdent, quoteLiteral, type SyncQuerier } from './db.js';
import {
  conflictDetails,
  dataRefusalOf,
  findInvalidValue,
  locateRefusedRow,
  pushConflictError,
  type RowVersion,
  refusedRowConflict,
  rowInvalidError,
} from './push-conflict.js';
import {
  keyHexOf,
  keyStringOf,
  PushValidationError,
  PushValueError,
  type StagedRowInput,
  validatePushRows,
} from './rows.js';
import {
  CAPTURE_INSERT_TRIGGER,
  CAPTURE_TRIGGER,
  KEY_KIND_UUID,
  OP_DELETE,
  OP_INSERT,
  OWNER_GUARD_INSERT_TRIGGER,
  OWNER_GUARD_TRIGGER,
  SCOPE_INITIALIZING,
  SCOPE_UNINITIALIZED,
} from './schema-sql.js';
import {
  type Actor,
  activateSourceState,
  applyRetention,
  checkSourceSequence,
  ensureUserScope,
  findUserPk,
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
  return boundedTx(
    ctx,
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
  // Values are checked before the session is looked up, like the rest of row validation.
  const q: SyncQuerier = { query: (sql, params) => ctx.db.query(sql, params, txOpts(opts.signal, {})) };
  let staged: StagedRowInput[];
  try {
    staged = validatePushRows(ctx.topology, rows);
  } catch (e) {
    if (e instanceof PushValueError) {
      const userPk = await findUserPk(q, actor.userId);
      throw await rowInvalidError(q, actor.userId, userPk, req.start_row_ordinal + e.index, e.row, e.column);
    }
    chunkInvalid(e);
  }
  const invalid = await findInvalidValue(q, staged);
  if (invalid) {
    const userPk = await findUserPk(q, actor.userId);
    const row = staged[invalid.index]!;
    throw await rowInvalidError(
      q,
      actor.userId,
      userPk,
      req.start_row_ordinal + invalid.index,
      row,
      invalid.column,
    );
  }
  return boundedTx(
    ctx,
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

/** The `meta` text of a staged chunk (see push-sql.ts): parallel arrays, column lists deduplicated. */
interface ChunkMeta {
  /** table_id per row */
  t: number[];
  /** key string per row */
  k: string[];
  /** op_code per row */
  o: number[];
  /** base_row_version per row */
  b: number[];
  /** index into `c` per row */
  s: number[];
  /** distinct sorted payload column lists ('' for DELETE) */
  c: string[];
}

function chunkMetaOf(rows: readonly StagedRowInput[]): string {
  const meta: ChunkMeta = { t: [], k: [], o: [], b: [], s: [], c: [] };
  const colIdx = new Map<string, number>();
  for (const r of rows) {
    let i = colIdx.get(r.cols);
    if (i === undefined) {
      i = meta.c.length;
      colIdx.set(r.cols, i);
      meta.c.push(r.cols);
    }
    meta.t.push(r.info.tableId);
    meta.k.push(r.keyString);
    meta.o.push(r.opCode);
    meta.b.push(r.baseRowVersion);
    meta.s.push(i);
  }
  return JSON.stringify(meta);
}

/** One staged row at commit. */
interface ApplyRow {
  info: TableInfo;
  op: number;
  keyString: string;
  /** key_bytes as hex */
  keyHex: string;
  base: number;
  /** No row_state entry existed at conflict detection (so finalisation can insert, not upsert). */
  fresh: boolean;
  /** Sorted payload columns (validated against the table's catalogued columns). */
  cols: readonly string[];
  /** `cols` as staged (comma-separated): rows with equal table, op and sig share a statement. */
  sig: string;
  /** Apply payload text (JSON, bytea as `\x<hex>`); '' for DELETE. */
  payload: string;
}

/**
 * How a push commit captures its own INSERTs into one registered table. Eligible are plain tables
 * whose only triggers are the sync ones (FK checks are internal and write nothing) and that have no
 * rules: an INSERT statement into them has no effect besides its own rows, so `RETURNING` sees
 * exactly what the capture trigger would stage, and nothing else is captured while it runs.
 */
interface DirectInsertTable {
  /** `RETURNING` list: capture ordinal, key text, payload text. */
  readonly returning: string;
  /** The payload text is the canonical wire payload (up to Go's HTML escapes). */
  readonly canonical: boolean;
  /** canonical only: `RETURNING` list of a direct bundle: key text, final wire payload, key_bytes. */
  readonly bundleReturning: string | undefined;
}
interface DirectInsertPlan {
  readonly tables: ReadonlyMap<number, DirectInsertTable>;
  readonly tableIds: readonly number[];
}

/**
 * Column types whose `to_json` text is already Go's canonical encoding of the `JSON.parse`d value
 * (strings escaped like JSON.stringify, no number that float64 would change), so a row built from
 * them by `row_to_json` with columns in code point order needs no re-encoding (only `<>&` U+2028
 * U+2029 escapes, applied in JS when present). Numbers beyond int4, numeric, floats, json, bytea
 * and anything else go through the canonical encoder.
 */
const CANONICAL_AS_IS_TYPES = new Set([
  'text',
  'varchar',
  'bpchar',
  'uuid',
  'bool',
  'int2',
  'int4',
  'date',
  'time',
  'timestamp',
  'timestamptz',
]);
const DIRECT_ALIAS = 'oversync_t';
const NEEDS_HTML_ESCAPE_RE = /[<>&\u2028\u2029]/;

const directPlans = new WeakMap<Topology, Promise<DirectInsertPlan>>();

/**
 * Decided once per topology (like the rest of bootstrap, restart-only), on first use. A failed load
 * (say, its transaction was cancelled) is forgotten, and a caller that waited for it loads again
 * with its own transaction.
 */
async function directInsertPlan(tx: SyncQuerier, topology: Topology): Promise<DirectInsertPlan> {
  const cached = directPlans.get(topology);
  if (cached) {
    try {
      return await cached;
    } catch {
      // loaded again below
    }
  }
  const plan = loadDirectInsertPlan(tx, topology);
  directPlans.set(topology, plan);
  plan.catch(() => {
    if (directPlans.get(topology) === plan) directPlans.delete(topology);
  });
  return plan;
}

async function loadDirectInsertPlan(tx: SyncQuerier, topology: Topology): Promise<DirectInsertPlan> {
  const r = await tx.query<{ table_id: number; eligible: boolean; seq: string }>(
    `SELECT t.table_id,
            c.relkind = 'r'
            AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal
                             AND g.tgname <> ALL ($3::text[]))
            AND NOT EXISTS (SELECT 1 FROM pg_rewrite w WHERE w.ev_class = c.oid AND w.rulename <> '_RETURN')
            AS eligible,
            pg_get_serial_sequence('sync.bundle_capture_stage', 'capture_ordinal') AS seq
       FROM unnest($1::int4[], $2::text[]) AS t(table_id, qualified)
       JOIN pg_class c ON c.oid = to_regclass(t.qualified)`,
    [
      topology.tables.map((t) => t.tableId),
      topology.tables.map((t) => t.qualified),
      [OWNER_GUARD_TRIGGER, OWNER_GUARD_INSERT_TRIGGER, CAPTURE_TRIGGER, CAPTURE_INSERT_TRIGGER],
    ],
  );
  const tables = new Map<number, DirectInsertTable>();
  for (const row of r.rows) {
    const info = topology.byId.get(row.table_id);
    if (!row.eligible || !info) continue;
    const cols = [...info.columns.keys()].sort();
    const canonical = cols.every((c) => CANONICAL_AS_IS_TYPES.has(info.columns.get(c)!));
    const payload = canonical
      ? `(SELECT row_to_json(x)::text FROM (SELECT ${cols.map((c) => `${DIRECT_ALIAS}.${quoteIdent(c)}`).join(', ')}) AS x)`
      : `(to_jsonb(${DIRECT_ALIAS}.*) - '${SCOPE_COLUMN}')::text`;
    const key = `${DIRECT_ALIAS}.${quoteIdent(info.keyColumn)}`;
    const keyBytes = info.keyKind === KEY_KIND_UUID ? `uuid_send(${key})` : `convert_to(${key}, 'UTF8')`;
    tables.set(info.tableId, {
      returning: `nextval(${quoteLiteral(row.seq)}::regclass)::text AS ord, ${key}::text AS key, ${payload} AS doc`,
      canonical,
      bundleReturning: canonical
        ? `${key}::text AS key, ${goHtmlEscapeSql(payload)} AS doc, ${keyBytes} AS key_bytes`
        : undefined,
    });
  }
  return { tables, tableIds: [...tables.keys()] };
}

/** Go's HTML-safe escapes (`<>&` U+2028 U+2029, which occur only inside JSON strings) in SQL. */
function goHtmlEscapeSql(json: string): string {
  let out = json;
  for (const [c, esc] of [
    ["'<'", "'\\u003c'"],
    ["'>'", "'\\u003e'"],
    ["'&'", "'\\u0026'"],
    ["U&'\\2028'", "'\\u2028'"],
    ["U&'\\2029'", "'\\u2029'"],
  ])
    out = `replace(${out}, ${c}, ${esc})`;
  return out;
}

/** Rows per INSERT statement at most (bounds the size of one statement's JSON parameter). */
const MAX_INSERT_BATCH = 10_000;

/**
 * Applies staged rows in staged order. Consecutive INSERTs of one table and column set go in one
 * statement, fed by a JSON array parameter; into eligible tables it returns each row's capture
 * ordinal, key and payload, collected into `direct` (the capture trigger skips those statements).
 */
async function applyRows(
  tx: SyncQuerier,
  userId: string,
  rows: readonly ApplyRow[],
  plan: DirectInsertPlan,
  direct: DirectInsertEvent[],
): Promise<void> {
  let i = 0;
  while (i < rows.length) {
    const r = rows[i]!;
    const keyCast = r.info.keyKind === 1 ? 'uuid' : 'text';
    const keyCol = quoteIdent(r.info.keyColumn);
    if (r.op === OP_INSERT) {
      let j = i + 1;
      while (
        j < rows.length &&
        j - i < MAX_INSERT_BATCH &&
        rows[j]!.op === OP_INSERT &&
        rows[j]!.info === r.info &&
        rows[j]!.sig === r.sig
      )
        j++;
      const colList = r.cols.map(quoteIdent);
      const payloads: string[] = [];
      for (let k = i; k < j; k++) payloads.push(rows[k]!.payload);
      const d = plan.tables.get(r.info.tableId);
      const res = await tx.query<{ ord: string; key: string; doc: string }>(
        `INSERT INTO ${r.info.qualified} AS ${DIRECT_ALIAS} (_sync_scope_id, ${colList.join(', ')})
         SELECT $1, ${colList.map((c) => `p.${c}`).join(', ')}
           FROM jsonb_populate_recordset(NULL::${r.info.qualified}, $2::jsonb) AS p
         ${d ? `RETURNING ${d.returning}` : ''}`,
        [userId, `[${payloads.join(',')}]`],
      );
      if (d) {
        if (res.rows.length !== j - i) throw new Error(`INSERT returned ${res.rows.length} of ${j - i} rows`);
        for (let n = 0; n < res.rows.length; n++) {
          const x = res.rows[n]!;
          const ord = Number(x.ord);
          if (!Number.isSafeInteger(ord)) throw new Error(`capture ordinal ${x.ord} is beyond 2^53`);
          let doc = x.doc;
          if (d.canonical && NEEDS_HTML_ESCAPE_RE.test(doc)) doc = goEscapeJsonText(doc);
          // Rows come back in insertion order, i.e. in the order sent; the key check keeps that an
          // optimisation (reusing the staged row's key bytes) rather than an assumption.
          const a = rows[i + n]!;
          const same = a.keyString === x.key;
          direct.push({
            ord,
            info: r.info,
            keyString: x.key,
            keyHex: same ? a.keyHex : keyHexOf(r.info, x.key),
            fresh: same && a.fresh,
            payload: doc,
            canonical: d.canonical,
          });
        }
      }
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
           FROM jsonb_populate_record(NULL::${r.info.qualified}, $1::jsonb) AS p
          WHERE t.${keyCol} = $2::${keyCast} AND t._sync_scope_id = $3`,
        [r.payload, r.keyString, userId],
      );
    }
    i++;
  }
}

/**
 * The whole push is fresh INSERTs into tables whose RETURNING payload is already canonical: then
 * each INSERT statement also writes the bundle's rows and row_state from its own RETURNING, and
 * nothing is read back, normalised or sent again (keys are unique and nothing else is captured,
 * so the committed rows are exactly the inserted rows in insertion order).
 */
function directBundleEligible(rows: readonly ApplyRow[], plan: DirectInsertPlan): boolean {
  for (const r of rows) {
    if (r.op !== OP_INSERT || !r.fresh || plan.tables.get(r.info.tableId)?.bundleReturning === undefined)
      return false;
  }
  return true;
}

async function commitDirectBundle(
  tx: SyncQuerier,
  ctx: ServiceContext,
  userId: string,
  userPk: string,
  source: { sourceId: string; sourceBundleId: number },
  rows: readonly ApplyRow[],
  plan: DirectInsertPlan,
): Promise<{ bundleSeq: number; rowCount: number; hash: string }> {
  const bundleSeq = await allocateBundleSeq(tx, userPk);
  // The log row first (hash filled in below): installs made before bundle_rows lost its FK to
  // bundle_log still check it per row.
  await tx.query(
    `INSERT INTO sync.bundle_log (user_pk, bundle_seq, source_id, source_bundle_id, row_count, byte_count, bundle_hash)
     VALUES ($1, $2, $3, $4, 0, 0, '\\x')`,
    [userPk, bundleSeq, source.sourceId, source.sourceBundleId],
  );
  const hashRows: HashableBundleRow[] = [];
  const texts: string[] = [];
  let i = 0;
  while (i < rows.length) {
    const r = rows[i]!;
    let j = i + 1;
    while (j < rows.length && j - i < MAX_INSERT_BATCH && rows[j]!.info === r.info && rows[j]!.sig === r.sig)
      j++;
    const colList = r.cols.map(quoteIdent);
    const payloads: string[] = [];
    for (let k = i; k < j; k++) payloads.push(rows[k]!.payload);
    const res = await tx.query<{ n: string; key: string; doc: string }>(
      `WITH ins AS (
         INSERT INTO ${r.info.qualified} AS ${DIRECT_ALIAS} (_sync_scope_id, ${colList.join(', ')})
         SELECT $1, ${colList.map((c) => `p.${c}`).join(', ')}
           FROM jsonb_populate_recordset(NULL::${r.info.qualified}, $2::jsonb) AS p
         RETURNING ${plan.tables.get(r.info.tableId)!.bundleReturning}),
       r AS (SELECT row_number() OVER () AS n, key, doc, key_bytes FROM ins),
       written_rows AS (
         INSERT INTO sync.bundle_rows (user_pk, bundle_seq, row_ordinal, table_id, key_bytes, op_code, payload_wire)
         SELECT $3, $4, $5 + r.n, $6, r.key_bytes, ${OP_INSERT}, r.doc::json FROM r),
       written_state AS (
         INSERT INTO sync.row_state (user_pk, table_id, key_bytes, bundle_seq, deleted)
         SELECT $3, $6, r.key_bytes, $4, FALSE FROM r)
       SELECT n, key, doc FROM r`,
      [userId, `[${payloads.join(',')}]`, userPk, bundleSeq, texts.length, r.info.tableId],
    );
    if (res.rows.length !== j - i) throw new Error(`INSERT returned ${res.rows.length} of ${j - i} rows`);
    // A CTE scan returns rows in the CTE's order; the ordinals make that checked, not assumed.
    let got = res.rows;
    if (got.some((x, k) => Number(x.n) !== k + 1)) got = [...got].sort((x, y) => Number(x.n) - Number(y.n));
    const { schema, table, keyColumn } = r.info;
    for (const x of got) {
      texts.push(x.doc);
      hashRows.push({
        schema,
        table,
        key: { [keyColumn]: x.key },
        op: 'INSERT',
        row_version: bundleSeq,
        payload: PAYLOAD_PRESENT,
      });
    }
    i = j;
  }
  const hash = computeBundleHash(hashRows, texts);
  const done = await tx.query<{ staged: boolean }>(
    `UPDATE sync.bundle_log SET row_count = $3, byte_count = $4, bundle_hash = decode($5, 'hex')
      WHERE user_pk = $1 AND bundle_seq = $2
     RETURNING EXISTS (SELECT 1 FROM sync.bundle_capture_stage WHERE txid = txid_current() AND user_pk = $1) AS staged`,
    [userPk, bundleSeq, texts.length, hash.byteCount, hash.hex],
  );
  // Guaranteed by directBundleEligible; checked because a miss would silently drop captured rows.
  if (done.rows[0]?.staged !== false) throw new Error('a direct push bundle captured rows through the stage');
  await notifyBundle(tx, ctx.notifyChannel, userPk, bundleSeq, source);
  return { bundleSeq, rowCount: texts.length, hash: hash.hex };
}

/** Reads a session's staged chunks back in row order and checks they form rows 0..planned-1. */
async function loadStagedRows(
  tx: SyncQuerier,
  topology: Topology,
  pushId: string,
  s: SessionRow,
): Promise<ApplyRow[]> {
  const chunks = await tx.query<{ start: string; row_count: number; meta: string; payloads: string }>(
    `SELECT start_row_ordinal::text AS start, row_count, meta, payloads
       FROM sync.push_session_chunks WHERE push_id = $1 ORDER BY start_row_ordinal`,
    [pushId],
  );
  const planned = Number(s.planned_row_count);
  let staged = 0;
  for (const c of chunks.rows) staged += c.row_count;
  if (Number(s.next_expected_row_ordinal) !== planned || staged !== planned) {
    throw wireError(
      'push_commit_invalid',
      `staged row count ${staged} does not match planned_row_count ${planned}`,
    );
  }
  const seen = new Set<string>();
  const rows: ApplyRow[] = [];
  for (const c of chunks.rows) {
    if (Number(c.start) !== rows.length) {
      throw wireError('push_commit_invalid', `staged rows are not contiguous at row_ordinal ${rows.length}`);
    }
    const meta = JSON.parse(c.meta) as ChunkMeta;
    const payloads = c.payloads.split('\n');
    if (meta.t.length !== c.row_count || payloads.length !== c.row_count) {
      throw new Error(`staged chunk at ${c.start} of push session ${pushId} is damaged`);
    }
    const colLists = meta.c.map((sig) => (sig === '' ? [] : sig.split(',')));
    for (let i = 0; i < c.row_count; i++) {
      const info = topology.byId.get(meta.t[i]!);
      if (!info) throw new Error(`staged row for unknown table_id ${meta.t[i]}`);
      const keyString = meta.k[i]!;
      const id = `${info.tableId}:${keyString}`;
      if (seen.has(id)) {
        throw wireError(
          'push_commit_invalid',
          `duplicate target row in staged push session: ${info.name} ${keyString}`,
        );
      }
      seen.add(id);
      const sigIdx = meta.s[i]!;
      rows.push({
        info,
        op: meta.o[i]!,
        keyString,
        keyHex: keyHexOf(info, keyString),
        base: meta.b[i]!,
        fresh: false,
        cols: colLists[sigIdx]!,
        sig: meta.c[sigIdx]!,
        payload: payloads[i]!,
      });
    }
  }
  // Columns were checked at upload; the catalogue is fixed since bootstrap, so this only guards
  // against a session staged under another registration.
  const checked = new Set<string>();
  for (const r of rows) {
    const id = `${r.info.tableId}:${r.sig}`;
    if (checked.has(id)) continue;
    checked.add(id);
    for (const c of r.cols) {
      if (!r.info.columns.has(c))
        throw wireError('push_commit_invalid', `staged payload has unknown column ${c}`);
    }
  }
  return rows;
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
      await lockUser(tx, actor.userId, limits.uploadLockTimeoutMs);
      const s = await loadSessionForUpdate(tx, actor, pushId);
      const apply = await loadStagedRows(tx, topology, pushId, s);
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
      const plan = await directInsertPlan(tx, topology);
      await setBundleContext(tx, {
        userId: actor.userId,
        userPk: s.user_pk,
        sourceId: s.source_id,
        sourceBundleId,
        initializationId,
        directInsertTableIds: plan.tableIds,
      });

      // Conflict detection on base_row_version, in staged order; the first conflict wins.
      const states = await tx.query<{
        table_id: number;
        key_bytes: Buffer;
        bundle_seq: string;
        deleted: boolean;
      }>(
        `SELECT s.table_id, s.key_bytes, s.bundle_seq::text, s.deleted
         FROM unnest(string_to_array($2, ',')::int4[], string_to_array($3, ',')) AS r(table_id, key_hex)
         JOIN sync.row_state s ON s.user_pk = $1 AND s.table_id = r.table_id AND s.key_bytes = decode(r.key_hex, 'hex')`,
        // comma-joined (hex and ids never contain one): much cheaper to send than array literals
        [s.user_pk, apply.map((r) => r.info.tableId).join(','), apply.map((r) => r.keyHex).join(',')],
      );
      const stateOf = new Map<string, RowVersion>();
      for (const st of states.rows) {
        const info = topology.byId.get(st.table_id)!;
        stateOf.set(`${st.table_id}:${keyStringOf(info, st.key_bytes)}`, {
          version: Number(st.bundle_seq),
          deleted: st.deleted,
        });
      }
      const stateOfRow = (a: ApplyRow) => stateOf.get(`${a.info.tableId}:${a.keyString}`);
      for (const a of apply) {
        const st = stateOfRow(a);
        a.fresh = st === undefined;
        const msg = conflictMessage(a, st, a.base);
        if (msg !== undefined) {
          const conflict = await conflictDetails(tx, actor.userId, a, st, { reason: 'row_version' });
          throw pushConflictError(msg, conflict);
        }
      }

      const source = { sourceId: s.source_id, sourceBundleId };
      const applyBundle = async (): Promise<{ bundleSeq: number; rowCount: number; hash: string }> => {
        let bundle: { bundleSeq: number; rowCount: number; hash: string };
        if (directBundleEligible(apply, plan)) {
          bundle = await commitDirectBundle(tx, ctx, actor.userId, s.user_pk, source, apply, plan);
        } else {
          const direct: DirectInsertEvent[] = [];
          await applyRows(tx, actor.userId, apply, plan, direct);
          const b = await finalizeCapturedBundle(tx, topology, s.user_pk, source, ctx.notifyChannel, {
            direct,
          });
          if (!b)
            throw wireError(
              'push_commit_invalid',
              'push session produced no captured business-table effects',
            );
          bundle = { bundleSeq: b.bundle_seq, rowCount: b.row_count, hash: b.bundle_hash };
        }
        // The deferred checks (foreign keys) run here instead of at COMMIT: same work, but inside
        // the transaction body, where a refusal can be told from a failed COMMIT and answered.
        await tx.query('SET CONSTRAINTS ALL IMMEDIATE');
        return bundle;
      };
      let bundle: { bundleSeq: number; rowCount: number; hash: string };
      if (!careful) bundle = await applyBundle();
      else {
        await tx.query(`SAVEPOINT ${APPLY_SAVEPOINT}`);
        try {
          bundle = await applyBundle();
          await tx.query(`RELEASE SAVEPOINT ${APPLY_SAVEPOINT}`);
        } catch (e) {
          const refusal = dataRefusalOf(e);
          if (!refusal) throw e;
          await tx.query(`ROLLBACK TO SAVEPOINT ${APPLY_SAVEPOINT}`);
          await tx.query('SET CONSTRAINTS ALL DEFERRED');
          const refused = await locateRefusedRow(tx, topology, actor.userId, apply, (row) =>
            applyRows(tx, actor.userId, [row], plan, []),
          );
          // Nothing stored, no bundle_seq used, the session stays: the runTx rolls back on throw.
          if (!refused) {
            throw wireError(
              'push_commit_invalid',
              `push bundle was refused by the database (${refusal.reason}${refusal.constraint ? `, constraint ${refusal.constraint}` : ''}) and no single pushed row is to blame`,
              { details: { reason: refusal.reason, constraint: refusal.constraint } },
            );
          }
          const row = apply[refused.index]!;
          throw await refusedRowConflict(tx, actor.userId, s.user_pk, row, stateOfRow(row), refused);
        }
      }
      await activateSourceState(tx, s.user_pk, sessionActor.sourceId, sourceBundleId);
      await applyRetention(tx, s.user_pk, limits);
      await tx.query('DELETE FROM sync.push_sessions WHERE push_id = $1', [pushId]);
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
  await boundedTx(
    ctx,
    async (tx) => {
      await loadSessionForUpdate(tx, actor, pushId);
      await tx.query('DELETE FROM sync.push_sessions WHERE push_id = $1', [pushId]);
    },
    txOpts(opts.signal, { isolation: 'read committed' }),
  );
}
