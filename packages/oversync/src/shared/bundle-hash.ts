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
 *
 * `canonicalPayloads[i]`, when given, is the already canonical JSON text of row i's payload (the
 * server has it at hand); it must equal `canonicalJson(rows[i].payload)`.
 */
export function bundleHashInput(
  rows: readonly HashableBundleRow[],
  canonicalPayloads?: readonly (string | null)[],
): string {
  const out: string[] = ['['];
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i]!;
    const payload =
      row.op === 'DELETE' || row.payload === undefined || row.payload === null
        ? 'null'
        : (canonicalPayloads?.[i] ?? canonicalJson(row.payload));
    // Keys in code point order: key, op, payload, row_ordinal, row_version, schema, table.
    if (i > 0) out.push(',');
    out.push(
      '{"key":',
      canonicalJson(row.key),
      ',"op":',
      canonicalJson(row.op),
      ',"payload":',
      payload,
      ',"row_ordinal":',
      String(i),
      ',"row_version":',
      canonicalJson(row.row_version),
      ',"schema":',
      canonicalJson(row.schema),
      ',"table":',
      canonicalJson(row.table),
      '}',
    );
  }
  out.push(']');
  return out.join('');
}

/** `bundle_hash` = lowercase hex SHA-256 of {@link bundleHashInput}; `byteCount` = its UTF-8 length. */
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
