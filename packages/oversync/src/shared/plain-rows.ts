/**
 * Fast checks of the rows of large answers (a pull's bundles, a snapshot's chunks, committed-bundle
 * pages): a row that is already exactly what its zod schema would answer is used as it is, without
 * the schema's copy; anything else goes through the schema. Internal (not exported by the package);
 * the server's fast path for push rows and bodies (http/push-routes.ts) uses the same pieces
 * (`isJsonObject`, `fieldCount`, `rowFields`).
 */
import type { BundleRow, SnapshotRow } from './wire-responses.js';

/** A JSON object (not an array, not null). */
export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** How many fields `v` has, or -1 when one of them is not in `fields`. */
export function fieldCount(v: Record<string, unknown>, fields: ReadonlySet<string>): number {
  let n = 0;
  for (const k in v) {
    if (!fields.has(k)) return -1;
    n++;
  }
  return n;
}

/** The fields of a row on the wire: those every row form has (schema, table, key, payload) and `own`. */
export function rowFields(...own: string[]): ReadonlySet<string> {
  return new Set(['schema', 'table', 'key', 'payload', ...own]);
}

/**
 * `v` is an object of `fields` only, all of them (`payload` may be missing when `payloadOptional`),
 * with `schema` and `table` strings, `key` an object and `row_version` a safe integer (as zod 4's `int()`).
 */
function isPlainRow(
  v: unknown,
  fields: ReadonlySet<string>,
  payloadOptional: boolean,
): v is Record<string, unknown> {
  if (!isJsonObject(v)) return false;
  const n = fieldCount(v, fields);
  return (
    (n === fields.size || (payloadOptional && n === fields.size - 1 && !('payload' in v))) &&
    typeof v['schema'] === 'string' &&
    typeof v['table'] === 'string' &&
    isJsonObject(v['key']) &&
    Number.isSafeInteger(v['row_version'])
  );
}

const BUNDLE_ROW_FIELDS = rowFields('op', 'row_version');
const BUNDLE_OPS: ReadonlySet<unknown> = new Set(['INSERT', 'UPDATE', 'DELETE']);
const SNAPSHOT_ROW_FIELDS = rowFields('row_version');

/**
 * `v` (a JSON value) is already what `bundleRowSchema` answers for it: exactly its fields,
 * each of its type. Such a row is used as it is, without the schema's copy (a large pull or
 * hydrate checks hundreds of thousands); anything else goes through the schema, which then decides
 * and names what is wrong. Never true where the schema would refuse it or answer another value
 * (`test/client/unit/transport.test.ts` holds it to the schema).
 */
export function isPlainBundleRow(v: unknown): v is BundleRow {
  return isPlainRow(v, BUNDLE_ROW_FIELDS, true) && BUNDLE_OPS.has(v['op']);
}

/** As isPlainBundleRow, for `snapshotRowSchema` (every field present, `payload` too). */
export function isPlainSnapshotRow(v: unknown): v is SnapshotRow {
  return isPlainRow(v, SNAPSHOT_ROW_FIELDS, false);
}
