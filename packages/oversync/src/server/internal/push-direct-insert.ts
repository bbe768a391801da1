/**
 * The direct-insert plan of a topology: which registered tables a push commit may INSERT into
 * while capturing the rows itself from `RETURNING` (instead of through the capture trigger and
 * its stage), and the `RETURNING` lists that do it.
 */

import type { SyncQuerier } from '../database.js';
import { quoteIdent, quoteLiteral } from './db.js';
import {
  CAPTURE_INSERT_TRIGGER,
  CAPTURE_TRIGGER,
  KEY_KIND_UUID,
  OWNER_GUARD_INSERT_TRIGGER,
  OWNER_GUARD_TRIGGER,
} from './schema-sql.js';
import { SCOPE_COLUMN, type Topology } from './topology.js';

/**
 * How a push commit captures its own INSERTs into one registered table. Eligible are plain tables
 * whose only triggers are the sync ones (FK checks are internal and write nothing) and that have no
 * rules: an INSERT statement into them has no effect besides its own rows, so `RETURNING` sees
 * exactly what the capture trigger would stage, and nothing else is captured while it runs.
 */
export interface DirectInsertTable {
  /** `RETURNING` list: capture ordinal, key text, payload text. */
  readonly returning: string;
  /** The payload text is the canonical wire payload (up to Go's HTML escapes). */
  readonly canonical: boolean;
  /** canonical only: `RETURNING` list of a direct bundle: key text, final wire payload, key_bytes. */
  readonly bundleReturning: string | undefined;
}

export interface DirectInsertPlan {
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

/** The alias of the target table in a push's INSERT statements (its `RETURNING` lists name it). */
export const DIRECT_ALIAS = 'oversync_t';
/** Characters Go's encoder escapes in JSON strings (`<>&` U+2028 U+2029). */
export const NEEDS_HTML_ESCAPE_RE = /[<>&\u2028\u2029]/;

const directPlans = new WeakMap<Topology, Promise<DirectInsertPlan>>();

/**
 * Decided once per topology (like the rest of bootstrap, restart-only), on first use. A failed load
 * (say, its transaction was cancelled) is forgotten, and a caller that waited for it loads again
 * with its own transaction.
 */
export async function directInsertPlan(tx: SyncQuerier, topology: Topology): Promise<DirectInsertPlan> {
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
export const MAX_INSERT_BATCH = 10_000;
