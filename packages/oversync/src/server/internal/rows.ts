import { canonicalJson, toWellFormed } from '../../shared/canonical-json.js';
import type { PushRequestRow, SyncKey, WireOp } from '../../shared/wire.js';
import { KEY_KIND_UUID, OP_DELETE, OP_INSERT, OP_UPDATE } from './schema-sql.js';
import type { TableInfo, Topology } from './topology.js';
import { SCOPE_COLUMN } from './topology.js';

/** A push row that failed validation; the caller maps it to the endpoint's `*_invalid` code. */
export class PushValidationError extends Error {
  override name = 'PushValidationError';
}

/**
 * A push row whose value for `column` its column type refuses (found in JS, e.g. U+0000 in a
 * string, which no PostgreSQL text or jsonb value can hold). `index` is the row's position in
 * the validated list; the caller answers `push_row_invalid` for it.
 */
export class PushValueError extends Error {
  override name = 'PushValueError';
  constructor(
    message: string,
    readonly index: number,
    readonly row: StagedRowInput,
    readonly column: string,
  ) {
    super(message);
  }
}

/** Longest text key accepted, in UTF-8 bytes: keys live in btree indexes (about 2.7 KB per entry). */
export const MAX_TEXT_KEY_BYTES = 1024;
/** Deepest nesting of arrays and objects accepted inside a payload value (PostgreSQL's jsonb parser recurses). */
export const MAX_PAYLOAD_DEPTH = 64;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const IDENT_RE = /^[a-z0-9_]+$/;
const SURROGATE_RE = /[\uD800-\uDFFF]/;
const BASE64_STD_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function opCode(op: WireOp): number {
  return op === 'INSERT' ? OP_INSERT : op === 'UPDATE' ? OP_UPDATE : OP_DELETE;
}
export function opName(code: number): WireOp {
  if (code === OP_INSERT) return 'INSERT';
  if (code === OP_UPDATE) return 'UPDATE';
  if (code === OP_DELETE) return 'DELETE';
  throw new Error(`unknown op_code ${code}`);
}

/**
 * The key string a wire key stands for: uuid keys must be canonical dashed lowercase; text keys
 * get Go's U+FFFD for lone surrogates. Equal key strings of one table are equal key_bytes.
 */
export function keyStringFor(info: TableInfo, key: string): string {
  if (info.keyKind === KEY_KIND_UUID) {
    if (!UUID_RE.test(key)) {
      throw new PushValidationError(
        `row key ${info.name}.${info.keyColumn} must use canonical dashed lowercase UUID text`,
      );
    }
    return key;
  }
  if (key.length > MAX_TEXT_KEY_BYTES / 3 && Buffer.byteLength(key, 'utf8') > MAX_TEXT_KEY_BYTES) {
    throw new PushValidationError(
      `row key ${info.name}.${info.keyColumn} is longer than ${MAX_TEXT_KEY_BYTES} bytes`,
    );
  }
  if (key.includes('\0')) {
    throw new PushValidationError(`row key ${info.name}.${info.keyColumn} must not contain U+0000`);
  }
  return toWellFormed(key);
}

/** key_bytes of a key string: 16 raw bytes for uuid keys, UTF-8 for text keys. */
export function keyBytesOf(info: TableInfo, key: string): Buffer {
  const k = keyStringFor(info, key);
  return info.keyKind === KEY_KIND_UUID ? Buffer.from(k.replace(/-/g, ''), 'hex') : Buffer.from(k, 'utf8');
}

/**
 * key_bytes as hex, of a key string already in canonical form (from keyStringFor or read back from
 * the database): SQL params carry keys as hex text, which costs less than a Buffer per key.
 */
export function keyHexOf(info: TableInfo, keyString: string): string {
  return info.keyKind === KEY_KIND_UUID
    ? keyString.replace(/-/g, '')
    : Buffer.from(keyString, 'utf8').toString('hex');
}

/** The key string of key_bytes (uuid: canonical dashed lowercase). */
export function keyStringOf(info: TableInfo, bytes: Buffer): string {
  if (info.keyKind === KEY_KIND_UUID) {
    if (bytes.length !== 16) throw new Error(`uuid key of ${info.name} is ${bytes.length} bytes`);
    const h = bytes.toString('hex');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
  return bytes.toString('utf8');
}

export function wireKey(info: TableInfo, bytes: Buffer): SyncKey {
  return { [info.keyColumn]: keyStringOf(info, bytes) };
}

/** A validated push row, ready to be staged. */
export interface StagedRowInput {
  readonly info: TableInfo;
  /** Canonical key string (see keyStringFor): equal strings are equal key_bytes. */
  readonly keyString: string;
  readonly opCode: number;
  readonly baseRowVersion: number;
  /** JSON of the payload for PostgreSQL (bytea as `\x<hex>` text); null for DELETE. */
  readonly payloadApply: string | null;
  /** The payload's column names, sorted and comma-separated ('' for DELETE). */
  readonly cols: string;
  /**
   * The payload values JS cannot vouch for (a timestamp string, a number for a numeric column…),
   * by column, for the database to cast at chunk upload; undefined when there are none.
   */
  readonly check: Record<string, unknown> | undefined;
  /** The first column whose value no PostgreSQL value can hold (U+0000, nesting too deep). */
  readonly badColumn?: string;
}

const UUID_ANY_CASE_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const INT_RANGE: Readonly<Record<string, number>> = { int2: 32767, int4: 2147483647, int8: 2 ** 63 };

/**
 * Whether `value` is surely accepted by a column of PostgreSQL type `type` (its `udt_name`) when
 * read by `jsonb_populate_record`. False means "ask the database", not "invalid": the database's
 * cast is the only authority, and values JS cannot judge cheaply go to it.
 */
function surelyValid(type: string, value: unknown): boolean {
  if (value === null) return true;
  switch (type) {
    case 'text':
    case 'json':
    case 'jsonb':
    case 'bytea': // checked as base64 above
      return true;
    case 'uuid':
      return typeof value === 'string' && UUID_ANY_CASE_RE.test(value);
    case 'bool':
      return typeof value === 'boolean';
    case 'float8':
      return typeof value === 'number';
    case 'int2':
    case 'int4':
    case 'int8':
      return Number.isSafeInteger(value) && Math.abs(value as number) <= INT_RANGE[type]!;
    default:
      return false;
  }
}

/** True when a JSON value holds U+0000 (in a string or a key) or nests deeper than `depth` allows. */
function unstorable(value: unknown, depth: number): boolean {
  if (typeof value === 'string') return value.includes('\0');
  if (value === null || typeof value !== 'object') return false;
  if (depth <= 0) return true;
  if (Array.isArray(value)) {
    for (const v of value) if (unstorable(v, depth - 1)) return true;
    return false;
  }
  for (const k in value) {
    if (k.includes('\0') || unstorable((value as Record<string, unknown>)[k], depth - 1)) return true;
  }
  return false;
}

/** Trimmed and lowercased; names that already are plain identifiers are returned as they are. */
function normalizeName(s: string): string {
  return IDENT_RE.test(s) ? s : s.trim().toLowerCase();
}

/**
 * Validates one push row against the registered topology (§11.6) and converts its payload to the
 * form applied to PostgreSQL. Only registered tables and their catalogued columns are accepted, so
 * no identifier from a request ever reaches SQL.
 */
export function validatePushRow(topology: Topology, row: PushRequestRow): StagedRowInput {
  const schema = normalizeName(row.schema) || 'public';
  const table = normalizeName(row.table);
  if (!IDENT_RE.test(schema) || !IDENT_RE.test(table)) {
    throw new PushValidationError(`invalid schema or table name ${JSON.stringify(`${schema}.${table}`)}`);
  }
  const info = topology.byName.get(`${schema}.${table}`);
  if (!info) throw new PushValidationError(`table ${schema}.${table} is not registered`);
  const op = row.op === 'INSERT' || row.op === 'UPDATE' ? row.op : row.op.trim().toUpperCase();
  if (op !== 'INSERT' && op !== 'UPDATE' && op !== 'DELETE') {
    throw new PushValidationError(`invalid op ${JSON.stringify(row.op)} for ${info.name}`);
  }
  if (row.key === null || typeof row.key !== 'object') {
    throw new PushValidationError(`row key for ${info.name} is required`);
  }
  const keyValue = row.key[info.keyColumn];
  if (typeof keyValue !== 'string') {
    throw new PushValidationError(`row key for ${info.name} must contain string field ${info.keyColumn}`);
  }
  const keyString = keyStringFor(info, keyValue);
  if (op === 'DELETE') {
    if (row.payload !== undefined) {
      throw new PushValidationError(`DELETE row ${info.name} ${keyString} must not include payload`);
    }
    return {
      info,
      keyString,
      opCode: OP_DELETE,
      baseRowVersion: row.base_row_version,
      payloadApply: null,
      cols: '',
      check: undefined,
    };
  }
  const payload = row.payload;
  if (payload === null || payload === undefined || typeof payload !== 'object' || Array.isArray(payload)) {
    throw new PushValidationError(`${op} row ${info.name} ${keyString} requires a JSON object payload`);
  }
  const out: Record<string, unknown> = {};
  let check: Record<string, unknown> | undefined;
  let badColumn: string | undefined;
  // Flat payloads without surrogates can skip the canonical encoder (see payloadApply below).
  let plain = true;
  const fields = payload as Record<string, unknown>;
  for (const rawKey of Object.keys(fields)) {
    const value = fields[rawKey];
    const col = IDENT_RE.test(rawKey) ? rawKey : rawKey.toLowerCase();
    if (col === SCOPE_COLUMN) {
      throw new PushValidationError(
        `payload for ${info.name} must not include hidden scope column ${SCOPE_COLUMN}`,
      );
    }
    if (col !== rawKey && !IDENT_RE.test(col)) {
      throw new PushValidationError(
        `payload for ${info.name} has invalid column name ${JSON.stringify(rawKey)}`,
      );
    }
    if (Object.hasOwn(out, col)) {
      throw new PushValidationError(`payload for ${info.name} repeats column ${col}`);
    }
    if (!info.columns.has(col)) {
      throw new PushValidationError(`payload for ${info.name} has unknown column ${col}`);
    }
    if (info.byteaColumns.has(col) && value !== null) {
      if (typeof value !== 'string' || !BASE64_STD_RE.test(value)) {
        throw new PushValidationError(
          `payload column ${info.name}.${col} must be standard base64 with padding`,
        );
      }
      out[col] = `\\x${Buffer.from(value, 'base64').toString('hex')}`;
    } else {
      out[col] = value;
      if (typeof value === 'string' ? SURROGATE_RE.test(value) : typeof value === 'object' && value !== null)
        plain = false;
      if (badColumn === undefined && unstorable(value, MAX_PAYLOAD_DEPTH)) badColumn = col;
      if (!surelyValid(info.columns.get(col)!, value)) {
        check ??= {};
        check[col] = value;
      }
    }
  }
  const payloadKey = out[info.keyColumn];
  if (payloadKey === undefined) out[info.keyColumn] = keyString;
  else if (payloadKey !== keyValue) {
    throw new PushValidationError(
      `payload key ${info.name}.${info.keyColumn} must match request key ${JSON.stringify(keyValue)}`,
    );
  }
  return {
    info,
    keyString,
    opCode: op === 'INSERT' ? OP_INSERT : OP_UPDATE,
    baseRowVersion: row.base_row_version,
    // Only PostgreSQL reads this text (jsonb_populate_record*), so key order and escapes do not
    // matter; what must match the reference is the values: numbers as float64 (JSON.parse did that;
    // -0 and 0 are the same jsonb numeric) and lone surrogates as U+FFFD, which JSON.stringify
    // would keep as \udxxx escapes that PostgreSQL rejects: such payloads, and nested values,
    // take the canonical encoder.
    payloadApply: plain ? JSON.stringify(out) : canonicalJson(out),
    // Column names are [a-z0-9_] (checked above), so the default sort is code point order.
    cols: Object.keys(out).sort().join(','),
    check,
    ...(badColumn === undefined ? {} : { badColumn }),
  };
}

/** Validates a list of push rows, rejecting duplicate targets within it. */
export function validatePushRows(topology: Topology, rows: readonly PushRequestRow[]): StagedRowInput[] {
  const seen = new Set<string>();
  const out: StagedRowInput[] = [];
  for (const row of rows) {
    const v = validatePushRow(topology, row);
    const id = `${v.info.tableId}:${v.keyString}`;
    if (seen.has(id)) {
      throw new PushValidationError(`duplicate target row in push request: ${v.info.name} ${v.keyString}`);
    }
    seen.add(id);
    if (v.badColumn !== undefined) {
      throw new PushValueError(
        `value of ${v.info.name}.${v.badColumn} for row ${v.keyString} cannot be stored (U+0000 or nesting deeper than ${MAX_PAYLOAD_DEPTH})`,
        out.length,
        v,
        v.badColumn,
      );
    }
    out.push(v);
  }
  return out;
}

/**
 * Converts a payload read from PostgreSQL (`to_jsonb(row) - '_sync_scope_id'`, parsed) to its wire
 * form in place: bytea `\x<hex>` strings become standard base64.
 */
export function toWirePayload(info: TableInfo, payload: Record<string, unknown>): Record<string, unknown> {
  delete payload[SCOPE_COLUMN];
  for (const col of info.byteaColumns) {
    const v = payload[col];
    if (typeof v === 'string' && v.startsWith('\\x'))
      payload[col] = Buffer.from(v.slice(2), 'hex').toString('base64');
  }
  return payload;
}
