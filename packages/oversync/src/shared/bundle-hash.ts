import { createHash } from 'node:crypto';
import { canonicalJson, goJsonString } from './canonical-json.js';

const LONE_SURROGATE_TEST_RE = /[\uD800-\uDFFF]/;

import type { SyncKey, WireOp } from './wire.js';

/** One committed row as the hash sees it. `payload` is the parsed wire payload (ignored for DELETE). */
export interface HashableBundleRow {
  readonly schema: string;
  readonly table: string;
  readonly key: SyncKey;
  readonly op: WireOp;
  readonly row_version: number;
  readonly payload?: unknown;
}

/**
 * The result of {@link computeBundleHash}: the `bundle_hash` of a committed bundle as the server stores and
 * announces it and the client recomputes to verify the rows it fetched, with the hash input and its length.
 */
export interface BundleHash {
  /** 64 lowercase hex characters, the wire form of `bundle_hash`. */
  readonly hex: string;
  /** Length in bytes of the canonical hash input (the server stores it as the bundle's `byte_count`). */
  readonly byteCount: number;
  /** The canonical hash input itself. */
  readonly canonical: string;
}

/**
 * The hash input of a committed bundle: canonical JSON (Go `json.Marshal` rules) of
 * `[{row_ordinal: i, schema, table, key, op, row_version, payload | null}]` in committed order,
 * with 0-based ordinals and `payload: null` for DELETE rows.
 *
 * `canonicalPayloads[i]`, when given, is the already canonical JSON text of row i's payload (the
 * server has it at hand); it must equal `canonicalJson(rows[i].payload)`.
 *
 * @example
 * ```ts
 * import { bundleHashInput } from '@x/oversync';
 *
 * const text = bundleHashInput([
 *   { schema: 'app', table: 'notes', key: { id: 'n1' }, op: 'INSERT', row_version: 1, payload: { id: 'n1', body: 'hi' } },
 * ]);
 * console.log(text);
 * // [{"key":{"id":"n1"},"op":"INSERT","payload":{"body":"hi","id":"n1"},"row_ordinal":0,"row_version":1,"schema":"app","table":"notes"}]
 * ```
 */
export function bundleHashInput(
  rows: readonly HashableBundleRow[],
  canonicalPayloads?: readonly (string | null)[],
): string {
  // Keys in code point order: key, op, payload, row_ordinal, row_version, schema, table. The parts
  // that repeat from row to row (op, schema and table) are encoded once per distinct value.
  const tails = new Map<string, Map<string, string>>();
  let out = '[';
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    const payload =
      row.op === 'DELETE' || row.payload === undefined || row.payload === null
        ? 'null'
        : (canonicalPayloads?.[i] ?? canonicalJson(row.payload));
    let bySchema = tails.get(row.schema);
    if (bySchema === undefined) {
      bySchema = new Map();
      tails.set(row.schema, bySchema);
    }
    let tail = bySchema.get(row.table);
    if (tail === undefined) {
      tail = `,"schema":${canonicalJson(row.schema)},"table":${canonicalJson(row.table)}}`;
      bySchema.set(row.table, tail);
    }
    out +=
      (i > 0 ? ',{"key":' : '{"key":') +
      keyJson(row.key) +
      ',"op":' +
      (OP_JSON[row.op] ?? canonicalJson(row.op)) +
      ',"payload":' +
      payload +
      ',"row_ordinal":' +
      i +
      ',"row_version":' +
      canonicalJson(row.row_version) +
      tail;
  }
  return `${out}]`;
}

const OP_JSON: Readonly<Record<string, string>> = {
  INSERT: '"INSERT"',
  UPDATE: '"UPDATE"',
  DELETE: '"DELETE"',
};

/** canonicalJson of a sync key: a one-column key with a string value (every key today) directly. */
function keyJson(key: SyncKey): string {
  const names = Object.keys(key);
  if (names.length === 1) {
    const name = names[0]!;
    const value = (key as Record<string, unknown>)[name];
    if (typeof value === 'string' && !LONE_SURROGATE_TEST_RE.test(name))
      return `{${goJsonString(name)}:${goJsonString(value)}}`;
  }
  return canonicalJson(key);
}

/**
 * `bundle_hash` = lowercase hex SHA-256 of {@link bundleHashInput}; `byteCount` = its UTF-8 length.
 *
 * @example
 * ```ts
 * import { computeBundleHash } from '@x/oversync';
 *
 * const { hex, byteCount } = computeBundleHash([
 *   { schema: 'app', table: 'notes', key: { id: 'n1' }, op: 'DELETE', row_version: 2 },
 * ]);
 * console.log(hex.length, byteCount); // 64 and the UTF-8 length of the hash input
 * ```
 */
export function computeBundleHash(
  rows: readonly HashableBundleRow[],
  canonicalPayloads?: readonly (string | null)[],
): BundleHash {
  const canonical = bundleHashInput(rows, canonicalPayloads);
  const bytes = Buffer.from(canonical, 'utf8');
  return {
    hex: createHash('sha256').update(bytes).digest('hex'),
    byteCount: bytes.length,
    canonical,
  };
}

/**
 * {@link computeBundleHash} computed incrementally: rows are added in committed order with their
 * canonical payload text (null for DELETE) and only hashed, never kept, so a bundle of any size is
 * hashed in memory bounded by one row. `digest()` returns the same `hex` and `byteCount`.
 *
 * @example
 * ```ts
 * import { BundleHasher, canonicalJson, computeBundleHash } from '@x/oversync';
 *
 * const rows = [
 *   { schema: 'app', table: 'notes', key: { id: 'n1' }, op: 'INSERT' as const, row_version: 1, payload: { id: 'n1' } },
 *   { schema: 'app', table: 'notes', key: { id: 'n0' }, op: 'DELETE' as const, row_version: 4 },
 * ];
 * const hasher = new BundleHasher();
 * for (const r of rows) hasher.add(r, r.payload === undefined ? null : canonicalJson(r.payload));
 * console.log(hasher.digest().hex === computeBundleHash(rows).hex); // true
 * ```
 */
export class BundleHasher {
  readonly #hash = createHash('sha256');
  readonly #tails = new Map<string, string>();
  #pending = '[';
  #byteCount = 0;
  #count = 0;

  /**
   * Adds the next row in committed order (its ordinal is the number of rows added before it), with
   * its payload already as canonical JSON text (`canonicalJson(payload)`), or null for a DELETE.
   */
  add(row: Omit<HashableBundleRow, 'payload'>, canonicalPayload: string | null): void {
    const tailId = `${row.schema}\u0000${row.table}`;
    let tail = this.#tails.get(tailId);
    if (tail === undefined) {
      tail = `,"schema":${canonicalJson(row.schema)},"table":${canonicalJson(row.table)}}`;
      this.#tails.set(tailId, tail);
    }
    this.#pending +=
      (this.#count > 0 ? ',{"key":' : '{"key":') +
      keyJson(row.key) +
      ',"op":' +
      (OP_JSON[row.op] ?? canonicalJson(row.op)) +
      ',"payload":' +
      (row.op === 'DELETE' || canonicalPayload === null ? 'null' : canonicalPayload) +
      ',"row_ordinal":' +
      this.#count +
      ',"row_version":' +
      canonicalJson(row.row_version) +
      tail;
    this.#count++;
    if (this.#pending.length >= 64 * 1024) this.#flush();
  }

  /** Rows added so far. */
  get count(): number {
    return this.#count;
  }

  #flush(): void {
    const bytes = Buffer.from(this.#pending, 'utf8');
    this.#hash.update(bytes);
    this.#byteCount += bytes.length;
    this.#pending = '';
  }

  /**
   * Ends the input and returns the bundle hash (lowercase hex SHA-256) and the byte length of the
   * canonical hash input, equal to {@link computeBundleHash} of the same rows. Call it once.
   */
  digest(): { hex: string; byteCount: number } {
    this.#pending += ']';
    this.#flush();
    return { hex: this.#hash.digest('hex'), byteCount: this.#byteCount };
  }
}
