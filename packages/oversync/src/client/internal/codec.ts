import { canonicalJson } from '../../shared/canonical-json.js';
import { ClientError } from '../errors.js';
import type { ColumnModel, TableModel } from './table-model.js';

/** A local payload: lowercase column → SQLite value in its JSON form (BLOBs as lowercase hex). */
export type LocalPayload = Record<string, unknown>;
/** A wire payload: lowercase column → server JSON value (UUIDs dashed, bytea base64). */
export type WirePayload = Record<string, unknown>;
export type WireKey = Record<string, string>;

const HEX32_RE = /^[0-9a-f]{32}$/;
/** Canonical UUID text: dashed, lower-case (the only form the codec accepts). */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function codecError(message: string, details: Record<string, unknown>): ClientError {
  return new ClientError('OVERSYNC_CLIENT_CODEC', message, { details });
}

/** 32 lowercase hex chars → dashed lowercase UUID. */
export function hexToUuid(hex: string): string {
  const h = hex.toLowerCase();
  if (!HEX32_RE.test(h)) throw codecError('invalid blob UUID: expected 16 bytes', { length: hex.length / 2 });
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Canonical dashed lowercase UUID → 32 lowercase hex chars. */
export function uuidToHex(uuid: string): string {
  if (typeof uuid !== 'string' || !UUID_RE.test(uuid)) {
    throw codecError('UUID value must be canonical dashed lowercase UUID text', {});
  }
  return uuid.replaceAll('-', '');
}

export function uuidToBytes(uuid: string): Buffer {
  return Buffer.from(uuidToHex(uuid), 'hex');
}

/** Strict standard padded base64 that round-trips exactly. */
export function decodeBase64Strict(s: string): Buffer {
  if (!BASE64_RE.test(s)) throw codecError('bytea value must be standard padded base64', {});
  const buf = Buffer.from(s, 'base64');
  if (buf.toString('base64') !== s) throw codecError('bytea value must be canonical base64', {});
  return buf;
}

function keyColumnsOf(m: TableModel): readonly ColumnModel[] {
  return m.keyColumns;
}

/** Local key_json object (parsed) → wire key. */
export function localKeyToWire(m: TableModel, localKey: Record<string, unknown>): WireKey {
  const out: WireKey = {};
  for (const c of keyColumnsOf(m)) {
    const v = localKey[c.key];
    if (typeof v !== 'string') {
      throw codecError(`key column ${m.table}.${c.key} must be TEXT or a UUID BLOB`, { table: m.table });
    }
    out[c.key] = c.isBlob ? hexToUuid(v) : v;
  }
  return out;
}

/**
 * Wire key → the local text forms in key-column order (UUIDs as 32 hex chars: the values SQLite's
 * `json_object` sees in the triggers) and the SQLite values to bind in WHERE clauses.
 */
export function wireKeyToLocal(
  m: TableModel,
  key: unknown,
): { text: string[]; bind: Array<string | Buffer> } {
  if (typeof key !== 'object' || key === null)
    throw codecError(`row key of ${m.table} must be an object`, {});
  const k = key as Record<string, unknown>;
  const text: string[] = [];
  const bind: Array<string | Buffer> = [];
  for (const c of keyColumnsOf(m)) {
    const v = k[c.key];
    if (typeof v !== 'string') throw codecError(`row key of ${m.table} lacks string column ${c.key}`, {});
    if (c.isBlob) {
      const hex = uuidToHex(v);
      text.push(hex);
      bind.push(Buffer.from(hex, 'hex'));
    } else {
      text.push(v);
      bind.push(v);
    }
  }
  return { text, bind };
}

/** Local payload → wire payload: UUID BLOBs dashed, other BLOBs base64, booleans, JSON nested. */
export function localPayloadToWire(m: TableModel, payload: LocalPayload): WirePayload {
  const out: WirePayload = {};
  for (const c of m.columns) {
    const v = payload[c.key];
    if (v === null || v === undefined) {
      out[c.key] = null;
      continue;
    }
    switch (c.kind) {
      case 'uuid':
        out[c.key] = v === '' ? null : hexToUuid(String(v));
        break;
      case 'blob':
        out[c.key] = Buffer.from(String(v), 'hex').toString('base64');
        break;
      case 'bool':
        out[c.key] = typeof v === 'number' ? v !== 0 : v;
        break;
      case 'json':
        if (typeof v === 'string') {
          try {
            out[c.key] = JSON.parse(v) as unknown;
          } catch {
            out[c.key] = v;
          }
        } else out[c.key] = v;
        break;
      default:
        out[c.key] = v;
    }
  }
  return out;
}

/** Converts one wire value to the value bound into SQLite. */
function wireValueToSqlite(m: TableModel, c: ColumnModel, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  switch (c.kind) {
    case 'uuid':
      if (v === '') return Buffer.alloc(0);
      if (typeof v !== 'string') throw codecError(`${m.table}.${c.key} must be a UUID string`, {});
      return uuidToBytes(v);
    case 'blob':
      if (typeof v !== 'string') throw codecError(`${m.table}.${c.key} must be a base64 string`, {});
      return v === '' ? Buffer.alloc(0) : decodeBase64Strict(v);
    case 'json':
      // The wire carries the JSON value itself; the local column holds its text.
      return JSON.stringify(v);
    default:
      if (typeof v === 'boolean') return v ? 1 : 0;
      if (typeof v === 'object') return JSON.stringify(v);
      return v;
  }
}

/** Wire payload → SQLite values in column order. Every local column must be present. */
export function wirePayloadToRow(m: TableModel, payload: unknown): unknown[] {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
    throw codecError(`payload for ${m.table} must be a JSON object`, { table: m.table });
  }
  const p = payload as Record<string, unknown>;
  const values: unknown[] = [];
  for (const c of m.columns) {
    if (!(c.key in p)) {
      throw codecError(`payload for ${m.table} lacks column ${c.key}`, { table: m.table, column: c.key });
    }
    values.push(wireValueToSqlite(m, c, p[c.key]));
  }
  return values;
}

/** Wire payload → local payload form (what the triggers would have captured). */
export function wirePayloadToLocal(m: TableModel, payload: unknown): LocalPayload {
  const values = wirePayloadToRow(m, payload);
  const out: LocalPayload = {};
  m.columns.forEach((c, i) => {
    const v = values[i];
    out[c.key] = Buffer.isBuffer(v) ? v.toString('hex') : v;
  });
  return out;
}

/** Deep JSON equality (numbers compared as doubles, key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

const RFC3339_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i;

function instantOf(s: string): number | undefined {
  if (!RFC3339_RE.test(s)) return undefined;
  const frac = /\.(\d+)/.exec(s)?.[1] ?? '';
  const ms = Date.parse(s);
  if (Number.isNaN(ms)) return undefined;
  // Keep sub-millisecond digits so instants differing below 1 ms stay different.
  return ms + Number(`0.${frac.slice(3) || '0'}`);
}

/** Replay equivalence: JSON equality where two RFC 3339 strings are equal when they name one instant. */
export function replayEquivalent(a: unknown, b: unknown): boolean {
  if (typeof a === 'string' && typeof b === 'string') {
    if (a === b) return true;
    const ia = instantOf(a);
    const ib = instantOf(b);
    return ia !== undefined && ia === ib;
  }
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') {
    return a === b || (typeof a === 'number' && typeof b === 'number' && a === b);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => replayEquivalent(x, b[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao).filter((k) => ao[k] !== undefined);
  const bk = Object.keys(bo).filter((k) => bo[k] !== undefined);
  if (ak.length !== bk.length) return false;
  return ak.every((k) => k in bo && replayEquivalent(ao[k], bo[k]));
}
