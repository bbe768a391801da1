/**
 * The registered tables as the server sees them: their normalised registration, the runtime
 * metadata read from the catalog at bootstrap (columns, key kind, foreign keys) and the dependency
 * order of the tables (parents first).
 */
import { sortKeysByCodePoint } from '../../shared/canonical-json.js';
import type { SyncQuerier } from '../database.js';
import type { DiscoveredSchema } from '../discovered-schema.js';
import { UnsupportedSchemaError } from '../errors.js';
import { quoteIdent } from './db.js';
import { KEY_KIND_TEXT, KEY_KIND_UUID } from './schema-sql.js';

export const SCOPE_COLUMN = '_sync_scope_id';

/** Runtime metadata of one registered table, fixed at bootstrap. */
export interface TableInfo {
  readonly tableId: number;
  readonly schema: string;
  readonly table: string;
  /** `schema.table` */
  readonly name: string;
  /** `"schema"."table"` */
  readonly qualified: string;
  readonly keyColumn: string;
  readonly keyKind: typeof KEY_KIND_UUID | typeof KEY_KIND_TEXT;
  /** Every column except `_sync_scope_id`, with its `udt_name`. */
  readonly columns: ReadonlyMap<string, string>;
  readonly byteaColumns: ReadonlySet<string>;
  /** Opted in to backend writes (`backendWrites: true`): writes without bundle context sync at commit. */
  readonly backendWrites: boolean;
}

export interface Topology {
  readonly tables: readonly TableInfo[];
  readonly byName: ReadonlyMap<string, TableInfo>;
  readonly byId: ReadonlyMap<number, TableInfo>;
  readonly discovered: DiscoveredSchema;
}

export interface RegisteredTableInput {
  readonly schema: string;
  readonly table: string;
  readonly syncKeyColumns: readonly string[];
  readonly backendWrites?: boolean;
}

export interface NormalizedTable {
  schema: string;
  table: string;
  name: string;
  keyColumn: string;
  backendWrites: boolean;
}

export function normalizeRegisteredTables(tables: readonly RegisteredTableInput[]): NormalizedTable[] {
  const out: NormalizedTable[] = [];
  const seen = new Set<string>();
  for (const t of tables) {
    const schema = t.schema.trim().toLowerCase() || 'public';
    const table = t.table.trim().toLowerCase();
    const name = `${schema}.${table}`;
    if (!table) throw new UnsupportedSchemaError('registered table name must not be empty');
    if (seen.has(name)) throw new UnsupportedSchemaError(`registered table ${name} is listed twice`);
    seen.add(name);
    const keys = [...new Set(t.syncKeyColumns.map((c) => c.trim().toLowerCase()).filter((c) => c !== ''))];
    if (keys.length !== 1) {
      throw new UnsupportedSchemaError(
        `registered table ${name} must declare exactly one sync key column (got ${keys.length})`,
      );
    }
    const keyColumn = keys[0]!;
    if (keyColumn === SCOPE_COLUMN) {
      throw new UnsupportedSchemaError(`registered table ${name} cannot use ${SCOPE_COLUMN} as its sync key`);
    }
    out.push({ schema, table, name, keyColumn, backendWrites: t.backendWrites === true });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export async function loadTableInfo(q: SyncQuerier, t: NormalizedTable, tableId: number): Promise<TableInfo> {
  const cols = await q.query<{ column_name: string; udt_name: string }>(
    `SELECT column_name, udt_name FROM information_schema.columns
      WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`,
    [t.schema, t.table],
  );
  if (cols.rows.length === 0) throw new UnsupportedSchemaError(`registered table ${t.name} does not exist`);
  const columns = new Map<string, string>();
  let scopeType: string | undefined;
  for (const c of cols.rows) {
    if (c.column_name === SCOPE_COLUMN) scopeType = c.udt_name;
    else columns.set(c.column_name, c.udt_name);
  }
  if (scopeType === undefined) {
    throw new UnsupportedSchemaError(`registered table ${t.name} must have a ${SCOPE_COLUMN} column`);
  }
  if (scopeType !== 'text') {
    throw new UnsupportedSchemaError(`registered table ${t.name} column ${SCOPE_COLUMN} must be text`);
  }
  const keyType = columns.get(t.keyColumn);
  if (keyType === undefined) {
    throw new UnsupportedSchemaError(`registered table ${t.name} has no sync key column ${t.keyColumn}`);
  }
  if (keyType !== 'uuid' && keyType !== 'text') {
    throw new UnsupportedSchemaError(
      `registered table ${t.name} sync key ${t.keyColumn} has type ${keyType}; allows only uuid and text`,
    );
  }
  for (const col of columns.keys()) {
    if (!/^[a-z0-9_]+$/.test(col)) {
      throw new UnsupportedSchemaError(
        `registered table ${t.name} column ${JSON.stringify(col)} is not lowercase`,
      );
    }
  }

  const idx = await q.query<{ name: string; partial: boolean; expr: boolean; cols: string[] }>(
    `SELECT i.indexrelid::regclass::text AS name, i.indpred IS NOT NULL AS partial, i.indexprs IS NOT NULL AS expr,
            array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord) AS cols
       FROM pg_index i
      WHERE i.indrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass AND i.indisunique`,
    [t.schema, t.table],
  );
  if (idx.rows.length === 0) {
    throw new UnsupportedSchemaError(
      `registered table ${t.name} must have a unique index on (${SCOPE_COLUMN}, key)`,
    );
  }
  let exact = false;
  for (const i of idx.rows) {
    if (i.partial || i.expr) {
      throw new UnsupportedSchemaError(
        `registered table ${t.name} has a partial or expression unique index ${i.name}`,
      );
    }
    if (i.cols[0] !== SCOPE_COLUMN) {
      throw new UnsupportedSchemaError(
        `registered table ${t.name} unique index ${i.name} must start with ${SCOPE_COLUMN} (scope-inclusive)`,
      );
    }
    if (i.cols.length === 2 && i.cols[1] === t.keyColumn) exact = true;
  }
  if (!exact) {
    throw new UnsupportedSchemaError(
      `registered table ${t.name} needs a unique index on exactly (${SCOPE_COLUMN}, ${t.keyColumn})`,
    );
  }
  const byteaColumns = new Set<string>();
  for (const [c, udt] of columns) if (udt.toLowerCase() === 'bytea') byteaColumns.add(c);
  return {
    tableId,
    schema: t.schema,
    table: t.table,
    name: t.name,
    qualified: `${quoteIdent(t.schema)}.${quoteIdent(t.table)}`,
    keyColumn: t.keyColumn,
    keyKind: keyType === 'uuid' ? KEY_KIND_UUID : KEY_KIND_TEXT,
    columns,
    byteaColumns,
    backendWrites: t.backendWrites,
  };
}

interface FkRow {
  conname: string;
  child_schema: string;
  child_table: string;
  parent_schema: string;
  parent_table: string;
  match_type: string;
  deferrable: boolean;
  child_cols: string[];
  parent_cols: string[];
}

export async function discoverForeignKeys(
  q: SyncQuerier,
  byName: ReadonlyMap<string, TableInfo>,
): Promise<Map<string, Set<string>>> {
  const names = [...byName.keys()];
  const fks = await q.query<FkRow>(
    `SELECT c.conname::text AS conname, cn.nspname::text AS child_schema, cc.relname::text AS child_table,
            pn.nspname::text AS parent_schema, pc.relname::text AS parent_table,
            c.confmatchtype::text AS match_type, c.condeferrable AS deferrable,
            array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o) AS child_cols,
            array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, o)
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) AS parent_cols
       FROM pg_constraint c
       JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
       JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
      WHERE c.contype = 'f' AND (cn.nspname || '.' || cc.relname) = ANY($1::text[])
      ORDER BY cn.nspname, cc.relname, c.conname`,
    [names],
  );
  const deps = new Map<string, Set<string>>();
  for (const n of names) deps.set(n, new Set());
  const nonDeferrable: string[] = [];
  for (const fk of fks.rows) {
    const child = `${fk.child_schema}.${fk.child_table}`;
    const parentName = `${fk.parent_schema}.${fk.parent_table}`;
    const parent = byName.get(parentName);
    if (!parent) {
      throw new UnsupportedSchemaError(
        `registered tables are not FK-closed: ${child} -> ${parentName} (${fk.conname})`,
      );
    }
    if (fk.match_type === 'f' || fk.match_type === 'p') {
      throw new UnsupportedSchemaError(
        `FK ${child}.${fk.conname} uses MATCH FULL/PARTIAL, which is unsupported`,
      );
    }
    if (
      fk.child_cols.length !== 2 ||
      fk.child_cols[0] !== SCOPE_COLUMN ||
      fk.parent_cols[0] !== SCOPE_COLUMN ||
      fk.parent_cols[1] !== parent.keyColumn
    ) {
      throw new UnsupportedSchemaError(
        `FK ${child}.${fk.conname} must be scope-inclusive and reference (${SCOPE_COLUMN}, parent_sync_key)`,
      );
    }
    if (!fk.deferrable) nonDeferrable.push(`${fk.child_schema}.${fk.conname}`);
    if (parentName !== child) deps.get(child)!.add(parentName);
  }
  if (nonDeferrable.length > 0) {
    throw new UnsupportedSchemaError(
      `non-deferrable FK constraints: ${nonDeferrable.join(', ')}; make these constraints DEFERRABLE before bootstrap`,
    );
  }
  return deps;
}

/** Tarjan SCC + topological order of components (queue ordered by each component's smallest member). */
export function orderTables(deps: ReadonlyMap<string, ReadonlySet<string>>): DiscoveredSchema {
  const nodes = sortKeysByCodePoint([...deps.keys()]);
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const comps: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of sortKeysByCodePoint([...(deps.get(v) ?? [])])) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      comps.push(sortKeysByCodePoint(comp));
    }
  };
  for (const n of nodes) if (!idx.has(n)) strong(n);

  const compOf = new Map<string, number>();
  comps.forEach((c, i) => {
    for (const m of c) compOf.set(m, i);
  });
  // Edges parent-component → child-component; in-degree = number of distinct parent components.
  const indeg = comps.map(() => 0);
  const children = comps.map(() => new Set<number>());
  for (const [child, parents] of deps) {
    const cc = compOf.get(child)!;
    for (const p of parents) {
      const pc = compOf.get(p);
      if (pc === undefined || pc === cc || children[pc]!.has(cc)) continue;
      children[pc]!.add(cc);
      indeg[cc]!++;
    }
  }
  const ready = comps.map((_, i) => i).filter((i) => indeg[i] === 0);
  const smallest = (i: number) => comps[i]![0]!;
  const order: string[] = [];
  const cycleGroup = new Map<string, number>();
  const cycles = new Map<number, string[]>();
  let cycleId = 0;
  while (ready.length > 0) {
    ready.sort((a, b) => (smallest(a) < smallest(b) ? -1 : smallest(a) > smallest(b) ? 1 : 0));
    const c = ready.shift()!;
    const members = comps[c]!;
    if (members.length > 1) {
      cycleId++;
      cycles.set(cycleId, members);
      for (const m of members) cycleGroup.set(m, cycleId);
    }
    order.push(...members);
    for (const ch of children[c]!) {
      indeg[ch]!--;
      if (indeg[ch] === 0) ready.push(ch);
    }
  }
  const dependencies = new Map<string, string[]>();
  for (const [k, v] of deps) dependencies.set(k, sortKeysByCodePoint([...v]));
  return {
    tableOrder: order,
    orderIdx: new Map(order.map((n, i) => [n, i])),
    dependencies,
    cycleGroup,
    cycles,
  };
}

export function applyDependencyOverrides(
  deps: Map<string, Set<string>>,
  overrides: Readonly<Record<string, readonly string[]>>,
): void {
  const norm = (n: string) => {
    const s = n.trim().toLowerCase();
    return s.includes('.') ? s : `public.${s}`;
  };
  for (const [childRaw, parents] of Object.entries(overrides)) {
    const child = norm(childRaw);
    if (!deps.has(child)) continue;
    for (const p of parents) {
      const parent = norm(p);
      if (parent !== child && deps.has(parent)) deps.get(child)!.add(parent);
    }
  }
}
