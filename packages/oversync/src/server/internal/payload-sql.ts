/**
 * SQL that renders a business row's wire payload as JSON text, column by column.
 *
 * The reference renders a payload as `to_jsonb(row) - '_sync_scope_id'` (bytea columns as standard
 * base64). Building that jsonb value, deleting a key from it and printing it costs about 3 µs per
 * row; for the common column types a concatenation of per-column JSON texts gives the same JSON
 * value at about a third of that, which is most of a large snapshot's materialisation. The
 * expressions below produce, per type, exactly the JSON value `to_jsonb` would:
 * - uuid: its canonical text, quoted (needs no escaping);
 * - text, varchar, bpchar, name, citext-free base text types, and numeric, bool, dates and
 *   timestamps: `to_json(col)`, which shares its per-type rules (escaping, ISO date-times, NaN as a
 *   string) with `to_jsonb`;
 * - int2/int4/int8: the decimal text;
 * - bytea: standard base64 without line breaks, quoted (the wire rule, not `to_jsonb`'s hex);
 * - jsonb: its own text; everything else (float4/float8, json, arrays, enums, domains, composites…):
 *   `to_jsonb(col)`, so number normalisation, json key de-duplication and the like stay as they were.
 * Keys are emitted in jsonb's order (shorter names first, then bytewise), so apart from whitespace
 * the text is the one `to_jsonb(row)::text` printed. Columns come from the catalog at the time of
 * the statement (see `CURRENT_COLUMNS_SQL`), so a column added after bootstrap is still included.
 */
import { goJsonString } from '../../shared/canonical-json.js';
import { quoteIdent, quoteLiteral } from './db.js';

export interface CatalogColumn {
  readonly name: string;
  /** `pg_type.typname` of the column's type (`_int4` for int4[], a domain's own name, …). */
  readonly type: string;
}

const TO_JSON_TYPES = new Set([
  'text',
  'varchar',
  'bpchar',
  'name',
  'numeric',
  'bool',
  'date',
  'timestamp',
  'timestamptz',
]);
const INTEGER_TYPES = new Set(['int2', 'int4', 'int8']);

/** JSON text of one column value of row alias `src`; NULL stays NULL (the caller maps it to `null`). */
function valueSql(col: CatalogColumn, bytea: boolean): string {
  const c = `src.${quoteIdent(col.name)}`;
  if (bytea || col.type === 'bytea') return `'"' || translate(encode(${c}, 'base64'), E'\\n', '') || '"'`;
  if (col.type === 'uuid') return `'"' || ${c}::text || '"'`;
  if (INTEGER_TYPES.has(col.type)) return `${c}::text`;
  if (TO_JSON_TYPES.has(col.type)) return `to_json(${c})::text`;
  if (col.type === 'jsonb') return `${c}::text`;
  return `to_jsonb(${c})::text`;
}

/** jsonb's key order: shorter keys first, equal lengths bytewise. */
function jsonbKeyOrder(a: string, b: string): number {
  const ba = Buffer.from(a, 'utf8');
  const bb = Buffer.from(b, 'utf8');
  return ba.length - bb.length || Buffer.compare(ba, bb);
}

/**
 * SQL text expression of the payload of row alias `src`: every column of `columns` except
 * `exclude` (the scope column) as a JSON object; `bytea` names columns sent as base64.
 */
export function payloadTextSql(
  columns: readonly CatalogColumn[],
  exclude: string,
  bytea: ReadonlySet<string> = new Set(),
): string {
  const cols = columns.filter((c) => c.name !== exclude).sort((a, b) => jsonbKeyOrder(a.name, b.name));
  if (cols.length === 0) return `'{}'`;
  const parts = cols.map(
    (c, i) =>
      `${quoteLiteral(`${i === 0 ? '{' : ','}${goJsonString(c.name)}:`)} || coalesce(${valueSql(c, bytea.has(c.name))}, 'null')`,
  );
  return `${parts.join(' || ')} || '}'`;
}

/**
 * The live columns of each relation in `$1::text[]` (qualified names), in table order:
 * `{ ord, name, type }` with `ord` the 1-based position in `$1`.
 */
export const CURRENT_COLUMNS_SQL = `SELECT r.ord::int AS ord, a.attname::text AS name, t.typname::text AS type
  FROM unnest($1::text[]) WITH ORDINALITY AS r(rel, ord)
  JOIN pg_attribute a ON a.attrelid = r.rel::regclass AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
 ORDER BY r.ord, a.attnum`;
