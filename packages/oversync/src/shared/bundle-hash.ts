import { createHash } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
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
 */
export function bundleHashInput(rows: readonly HashableBundleRow[]): string {
  const logical = rows.map((row, i) => ({
    row_ordinal: i,
    schema: row.schema,
    table: row.table,
    key: row.key,
    op: row.op,
    row_version: row.row_version,
    payload: row.op === 'DELETE' || row.payload === undefined ? null : row.payload,
  }));
  return canonicalJson(logical);
}

/** `bundle_hash` = lowercase hex SHA-256 of {@link bundleHashInput}; `byteCount` = its UTF-8 length. */
export function computeBundleHash(rows: readonly HashableBundleRow[]): BundleHash {
  const canonical = bundleHashInput(rows);
  const bytes = Buffer.from(canonical, 'utf8');
  return {
    hex: createHash('sha256').update(bytes).digest('hex'),
    byteCount: bytes.length,
    canonical,
  };
}
