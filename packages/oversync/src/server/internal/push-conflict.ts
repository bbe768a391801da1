/**
 * Pushes the database refuses because of their data (§4.6 extended): the `push_conflict` shape,
 * finding the row a refused commit failed on, and checking values at chunk upload.
 *
 * The reference answers a commit that violates a constraint, or a value its column type refuses,
 * with `500 push_session_commit_failed`; its client then re-sends the same frozen bundle forever.
 * Here such a push is answered per row: `409 push_conflict` (with `reason`) at commit, or
 * `400 push_row_invalid` at chunk upload for a value its column cannot hold. The fast path pays
 * nothing for this: the row is looked for only after the database refused the bundle.
 */
import { canonicalJson } from '../../shared/canonical-json.js';
import type { PushConflictDetails, PushConflictReason } from '../../shared/wire.js';
import type { SyncQuerier } from '../database.js';
import { type SyncServerError, wireError } from '../errors.js';
import { quoteIdent, type SqlErrorFields, sqlErrorOf } from './db.js';
import { keyHexOf, opName, type StagedRowInput, toWirePayload } from './rows.js';
import { KEY_KIND_UUID, OP_DELETE } from './schema-sql.js';
import type { TableInfo, Topology } from './topology.js';

/**
 * The conflict reason of a SQLSTATE that means "the data is refused": class 23 (integrity
 * constraints), class 22 (a value its type refuses) and 54000 (a value too large for an index).
 * Undefined for every other error (they stay server failures).
 */
export function refusalReason(code: string): PushConflictReason | undefined {
  switch (code) {
    case '23503':
    case '23001':
      return 'foreign_key';
    case '23505':
      return 'unique';
    case '23502':
      return 'not_null';
    case '23P01':
      return 'exclusion';
    case '54000':
      return 'invalid_value';
    default:
      if (code.startsWith('23')) return 'check';
      if (code.startsWith('22')) return 'invalid_value';
      return undefined;
  }
}

/** The refusal behind `e`, when `e` is a data refusal (see refusalReason). */
export function dataRefusalOf(e: unknown): (SqlErrorFields & { reason: PushConflictReason }) | undefined {
  const f = sqlErrorOf(e);
  const reason = f && refusalReason(f.code);
  return f && reason ? { ...f, reason } : undefined;
}

/** A row's `sync.row_state` entry. */
export interface RowVersion {
  version: number;
  deleted: boolean;
}

export async function rowStateOf(
  q: SyncQuerier,
  userPk: string | undefined,
  info: TableInfo,
  keyString: string,
): Promise<RowVersion | undefined> {
  if (userPk === undefined) return undefined;
  const r = await q.query<{ bundle_seq: string; deleted: boolean }>(
    `SELECT bundle_seq::text, deleted FROM sync.row_state
      WHERE user_pk = $1 AND table_id = $2 AND key_bytes = decode($3, 'hex')`,
    [userPk, info.tableId, keyHexOf(info, keyString)],
  );
  const row = r.rows[0];
  return row ? { version: Number(row.bundle_seq), deleted: row.deleted } : undefined;
}

/** The live business row of the user in wire form, or null. */
export async function serverRowOf(
  q: SyncQuerier,
  info: TableInfo,
  userId: string,
  keyString: string,
): Promise<unknown> {
  const r = await q.query<{ doc: string }>(
    `SELECT to_jsonb(src.*)::text AS doc FROM ${info.qualified} src
      WHERE src.${quoteIdent(info.keyColumn)} = $1::${info.keyKind === KEY_KIND_UUID ? 'uuid' : 'text'}
        AND src._sync_scope_id = $2`,
    [keyString, userId],
  );
  const doc = r.rows[0]?.doc;
  return doc === undefined ? null : toWirePayload(info, JSON.parse(doc) as Record<string, unknown>);
}

/** A pushed row as far as a conflict needs it. */
export interface ConflictRow {
  readonly info: TableInfo;
  readonly op: number;
  readonly keyString: string;
  readonly base: number;
}

/** The extension fields of a conflict (absent ones are omitted from the body). */
export interface ConflictExtension {
  reason?: PushConflictReason;
  constraint?: string | undefined;
  column?: string | undefined;
  references?: PushConflictDetails['references'];
}

/**
 * The `conflict` object of a `push_conflict` / `push_row_invalid` body: the reference's fields
 * (the server's version of the row and its live after-image, or null) plus the extension.
 */
export async function conflictDetails(
  q: SyncQuerier,
  userId: string,
  row: ConflictRow,
  state: RowVersion | undefined,
  ext: ConflictExtension = {},
): Promise<PushConflictDetails> {
  const live = state !== undefined && !state.deleted;
  const conflict: PushConflictDetails = {
    schema: row.info.schema,
    table: row.info.table,
    key: { [row.info.keyColumn]: row.keyString },
    op: opName(row.op),
    base_row_version: row.base,
    server_row_version: state?.version ?? 0,
    server_row_deleted: state?.deleted ?? false,
    server_row: live ? await serverRowOf(q, row.info, userId, row.keyString) : null,
  };
  if (ext.reason !== undefined) conflict.reason = ext.reason;
  if (ext.constraint !== undefined) conflict.constraint = ext.constraint;
  if (ext.column !== undefined) conflict.column = ext.column;
  if (ext.references !== undefined) conflict.references = ext.references;
  return conflict;
}

export function pushConflictError(message: string, conflict: PushConflictDetails): SyncServerError {
  return wireError('push_conflict', message, { body: { conflict }, details: { conflict } });
}

// ---------------------------------------------------------------------------------------------
// Commit: which row did the database refuse?
// ---------------------------------------------------------------------------------------------

/** One foreign key between registered tables: (scope, column) of `child` → (scope, key) of `parent`. */
interface ForeignKey {
  readonly name: string;
  readonly child: TableInfo;
  readonly column: string;
  readonly parent: TableInfo;
}

const foreignKeyCache = new WeakMap<Topology, Promise<ForeignKey[]>>();

/** The registered foreign keys (bootstrap checked their shape), read once per topology on first need. */
function foreignKeysOf(q: SyncQuerier, topology: Topology): Promise<ForeignKey[]> {
  let fks = foreignKeyCache.get(topology);
  if (!fks) {
    fks = q
      .query<{ name: string; child: string; col: string; parent: string }>(
        `SELECT c.conname::text AS name, (cn.nspname || '.' || cc.relname) AS child,
                (SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[2]) AS col,
                (pn.nspname || '.' || pc.relname) AS parent
           FROM pg_constraint c
           JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
           JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
          WHERE c.contype = 'f' AND (cn.nspname || '.' || cc.relname) = ANY($1::text[])
          ORDER BY 2, 1`,
        [topology.tables.map((t) => t.name)],
      )
      .then((r) =>
        r.rows.flatMap((f) => {
          const child = topology.byName.get(f.child);
          const parent = topology.byName.get(f.parent);
          return child && parent ? [{ name: f.name, child, column: f.col, parent }] : [];
        }),
      );
    fks.catch(() => foreignKeyCache.delete(topology));
    foreignKeyCache.set(topology, fks);
  }
  return fks;
}

/** A refused row of a commit and why. */
export interface RefusedRow {
  readonly index: number;
  readonly reason: PushConflictReason;
  readonly constraint: string | undefined;
  readonly column: string | undefined;
  /** foreign_key, child side: the missing parent (table and key string). */
  readonly parent?: { info: TableInfo; keyString: string };
}

function keyCastOf(info: TableInfo): string {
  return info.keyKind === KEY_KIND_UUID ? 'uuid' : 'text';
}

/**
 * Foreign-key violations the bundle leaves behind once all its rows are applied (constraints still
 * deferred): a pushed row whose parent is missing, or a pushed DELETE whose NO ACTION children
 * remain. Returns the first such row in bundle order. One anti-join per foreign key, over the
 * pushed keys only.
 */
async function findForeignKeyViolation(
  q: SyncQuerier,
  topology: Topology,
  userId: string,
  rows: readonly ConflictRow[],
): Promise<RefusedRow | undefined> {
  const keysOf = (info: TableInfo, del: boolean) => {
    const keys: string[] = [];
    for (const r of rows) if (r.info === info && (r.op === OP_DELETE) === del) keys.push(r.keyString);
    return keys;
  };
  const found = new Map<string, RefusedRow>(); // `${tableId}:${key}` → refusal
  for (const fk of await foreignKeysOf(q, topology)) {
    const c = fk.child;
    const p = fk.parent;
    const childKeys = keysOf(c, false);
    if (childKeys.length > 0) {
      const r = await q.query<{ key: string; ref: string }>(
        `SELECT ch.${quoteIdent(c.keyColumn)}::text AS key, ch.${quoteIdent(fk.column)}::text AS ref
           FROM ${c.qualified} ch
          WHERE ch._sync_scope_id = $1 AND ch.${quoteIdent(c.keyColumn)} = ANY($2::${keyCastOf(c)}[])
            AND ch.${quoteIdent(fk.column)} IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM ${p.qualified} pa WHERE pa._sync_scope_id = ch._sync_scope_id
                             AND pa.${quoteIdent(p.keyColumn)} = ch.${quoteIdent(fk.column)})`,
        [userId, childKeys],
      );
      for (const x of r.rows) {
        const id = `${c.tableId}:${x.key}`;
        if (!found.has(id))
          found.set(id, {
            index: -1,
            reason: 'foreign_key',
            constraint: fk.name,
            column: fk.column,
            parent: { info: p, keyString: x.ref },
          });
      }
    }
    const deleted = keysOf(p, true);
    if (deleted.length > 0) {
      const r = await q.query<{ key: string }>(
        `SELECT k::text AS key FROM unnest($2::${keyCastOf(p)}[]) AS k
          WHERE EXISTS (SELECT 1 FROM ${c.qualified} ch WHERE ch._sync_scope_id = $1
                         AND ch.${quoteIdent(fk.column)} = k)`,
        [userId, deleted],
      );
      for (const x of r.rows) {
        const id = `${p.tableId}:${x.key}`;
        if (!found.has(id))
          found.set(id, { index: -1, reason: 'foreign_key', constraint: fk.name, column: undefined });
      }
    }
  }
  for (let i = 0; i < rows.length; i++) {
    const f = found.get(`${rows[i]!.info.tableId}:${rows[i]!.keyString}`);
    if (f) return { ...f, index: i };
  }
  return undefined;
}

const LOCATE_SAVEPOINT = 'oversync_locate';

/**
 * Finds the row of a bundle the database refused (`refusal`, the error of the whole apply). Runs
 * inside the commit's transaction, on the state before the apply, and leaves it that way: applies
 * the rows one statement at a time (constraints deferred, so a row may still reference a later
 * one) — the first statement that fails is the refused row; if all apply, the refusal came from a
 * deferred check, and the foreign keys are searched for the row that broke one. Undefined when no
 * single row is to blame (e.g. a cascade's child).
 */
export async function locateRefusedRow<R extends ConflictRow>(
  q: SyncQuerier,
  topology: Topology,
  userId: string,
  rows: readonly R[],
  applyOne: (row: R) => Promise<unknown>,
): Promise<RefusedRow | undefined> {
  await q.query(`SAVEPOINT ${LOCATE_SAVEPOINT}`);
  try {
    for (let i = 0; i < rows.length; i++) {
      try {
        await applyOne(rows[i]!);
      } catch (e) {
        const r = dataRefusalOf(e);
        if (!r) throw e;
        return { index: i, reason: r.reason, constraint: r.constraint, column: r.column };
      }
    }
    return await findForeignKeyViolation(q, topology, userId, rows);
  } finally {
    await q.query(`ROLLBACK TO SAVEPOINT ${LOCATE_SAVEPOINT}`);
    await q.query(`RELEASE SAVEPOINT ${LOCATE_SAVEPOINT}`);
  }
}

const REASON_TEXT: Readonly<Record<PushConflictReason, string>> = {
  row_version: 'base row version',
  foreign_key: 'foreign key',
  unique: 'unique',
  not_null: 'not null',
  check: 'check',
  exclusion: 'exclusion',
  invalid_value: 'invalid value',
};

/** The `push_conflict` error of a refused row (read on the state before the bundle's apply). */
export async function refusedRowConflict(
  q: SyncQuerier,
  userId: string,
  userPk: string,
  row: ConflictRow,
  state: RowVersion | undefined,
  refused: RefusedRow,
): Promise<SyncServerError> {
  const ext: ConflictExtension = {
    reason: refused.reason,
    constraint: refused.constraint,
    column: refused.reason === 'not_null' || refused.reason === 'invalid_value' ? refused.column : undefined,
  };
  let about = refused.constraint === undefined ? '' : ` (constraint ${refused.constraint})`;
  if (refused.parent) {
    const { info, keyString } = refused.parent;
    const ps = await rowStateOf(q, userPk, info, keyString);
    ext.references = {
      schema: info.schema,
      table: info.table,
      key: { [info.keyColumn]: keyString },
      row_version: ps?.version ?? 0,
      deleted: ps?.deleted ?? false,
    };
    about += `: references ${info.name} ${keyString}, which the server ${ps?.deleted ? 'has deleted' : 'does not have'}`;
  } else if (refused.reason === 'foreign_key' && row.op === OP_DELETE) {
    about += ': rows still reference it';
  } else if (ext.column !== undefined) {
    about += ` on column ${ext.column}`;
  }
  const conflict = await conflictDetails(q, userId, row, state, ext);
  return pushConflictError(
    `${REASON_TEXT[refused.reason]} conflict on ${row.info.name} ${row.keyString}${about}`,
    conflict,
  );
}

// ---------------------------------------------------------------------------------------------
// Chunk upload: values their column type refuses
// ---------------------------------------------------------------------------------------------

/**
 * Casts every payload value JS could not vouch for (`StagedRowInput.check`) to its column type:
 * one `jsonb_populate_recordset` per table of the chunk, which is what the commit's apply does
 * with the same values (encoded like the apply payload: lone surrogates as U+FFFD). Only when the database refuses is the row (then the column) looked for,
 * one small cast each. Returns the refused row's index and column, or undefined.
 */
export async function findInvalidValue(
  q: SyncQuerier,
  rows: readonly StagedRowInput[],
): Promise<{ index: number; column: string; code: string } | undefined> {
  const byTable = new Map<TableInfo, number[]>();
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (r.check === undefined) continue;
    const list = byTable.get(r.info);
    if (list) list.push(i);
    else byTable.set(r.info, [i]);
  }
  let first: { index: number; column: string; code: string } | undefined;
  for (const [info, idx] of byTable) {
    if (first !== undefined && idx[0]! > first.index) continue;
    const cast = (doc: string) =>
      q.query(`SELECT count(*) FROM jsonb_populate_recordset(NULL::${info.qualified}, $1::jsonb)`, [doc]);
    try {
      await cast(`[${idx.map((i) => canonicalJson(rows[i]!.check)).join(',')}]`);
      continue;
    } catch (e) {
      if (!dataRefusalOf(e)) throw e;
    }
    for (const i of idx) {
      if (first !== undefined && i > first.index) break;
      for (const [column, value] of Object.entries(rows[i]!.check!)) {
        try {
          await cast(`[${canonicalJson({ [column]: value })}]`);
        } catch (e) {
          const r = dataRefusalOf(e);
          if (!r) throw e;
          first = { index: i, column, code: r.code };
          break;
        }
      }
    }
  }
  return first;
}

/** The `400 push_row_invalid` error of a chunk row (`ordinal` in the bundle). */
export async function rowInvalidError(
  q: SyncQuerier,
  userId: string,
  userPk: string | undefined,
  ordinal: number,
  row: StagedRowInput,
  column: string,
): Promise<SyncServerError> {
  const cr: ConflictRow = {
    info: row.info,
    op: row.opCode,
    keyString: row.keyString,
    base: row.baseRowVersion,
  };
  const state = await rowStateOf(q, userPk, row.info, row.keyString);
  const conflict = await conflictDetails(q, userId, cr, state, { reason: 'invalid_value', column });
  return wireError(
    'push_row_invalid',
    `row ${ordinal} (${row.info.name} ${row.keyString}): value of column ${column} is invalid for its type`,
    { body: { row_ordinal: ordinal, conflict }, details: { row_ordinal: ordinal, conflict } },
  );
}
