import { ClientError } from '../errors.js';
import type { SqliteDb } from '../writer-types.js';
import { quoteIdent, sqlString } from './local-schema.js';

/** How a local column is converted between its SQLite value and its wire (server JSON) value. */
export type ColumnKind = 'uuid' | 'blob' | 'bool' | 'json' | 'plain';

export interface ColumnModel {
  /** Column name as declared. */
  readonly name: string;
  /** Lowercased name: the payload key. */
  readonly key: string;
  readonly declType: string;
  readonly kind: ColumnKind;
  readonly isBlob: boolean;
}

export interface TableModel {
  /** Lowercased local table name (also the wire table name). */
  readonly table: string;
  readonly quoted: string;
  readonly columns: readonly ColumnModel[];
  readonly byKey: ReadonlyMap<string, ColumnModel>;
  /** Sync key columns in configured order. */
  readonly keyColumns: readonly ColumnModel[];
  /** Managed parent tables (FK targets, self references excluded). */
  readonly parents: readonly string[];
  /** Every foreign key of this table (self references included), one entry per constraint. */
  readonly foreignKeys: readonly ForeignKeyModel[];
  /** Position in parent-first order. */
  order: number;
}

/** One foreign key: `table(from…) → parent(to…)`. */
export interface ForeignKeyModel {
  /** The referencing (child) table. */
  readonly table: string;
  readonly parent: string;
  /** Referencing columns, as declared. */
  readonly from: readonly string[];
  /** Referenced columns, as declared (the parent's primary key when the FK names none). */
  readonly to: readonly string[];
  readonly onDelete: string;
}

export interface TableConfig {
  readonly table: string;
  readonly syncKeyColumns: readonly string[];
}

interface PragmaColumn {
  name: string;
  type: string;
  pk: number;
}
interface PragmaFk {
  id: number;
  seq: number;
  table: string;
  from: string;
  to: string | null;
  on_delete: string;
}

function invalid(message: string, details: Record<string, unknown>): ClientError {
  return new ClientError('OVERSYNC_CLIENT_UNSUPPORTED_SCHEMA', message, { details });
}

/**
 * Reads the local tables and checks them against the configuration: keys are TEXT or 16-byte
 * UUID BLOB columns that together form the primary key (composite keys allowed), every FK points
 * at a managed table. Returns the models in parent-first order.
 */
export function loadTableModels(db: SqliteDb, configs: readonly TableConfig[]): TableModel[] {
  const names = new Set<string>();
  const models: TableModel[] = [];
  const managed = new Set(configs.map((c) => c.table.trim().toLowerCase()));
  for (const cfg of configs) {
    const table = cfg.table.trim().toLowerCase();
    if (!table || table.includes('.'))
      throw invalid(`table name "${cfg.table}" must be unqualified`, { table });
    if (table.startsWith('_sync_'))
      throw invalid(`table ${table} uses the reserved _sync_ prefix`, { table });
    if (names.has(table)) throw invalid(`table ${table} is configured twice`, { table });
    names.add(table);
    const cols = db.prepare(`PRAGMA table_info(${quoteIdent(table)})`).all() as PragmaColumn[];
    if (cols.length === 0) throw invalid(`table ${table} does not exist`, { table });
    const fks = db.prepare(`PRAGMA foreign_key_list(${quoteIdent(table)})`).all() as PragmaFk[];
    const fkCols = new Set(fks.map((f) => f.from.toLowerCase()));
    const keyNames = [...new Set(cfg.syncKeyColumns.map((k) => k.trim().toLowerCase()))];
    if (keyNames.length === 0) throw invalid(`table ${table} needs at least one sync key column`, { table });
    const pkCols = cols.filter((c) => c.pk > 0).map((c) => c.name.toLowerCase());
    if (pkCols.length !== keyNames.length || !keyNames.every((k) => pkCols.includes(k))) {
      throw invalid(`sync key (${keyNames.join(', ')}) of ${table} must be exactly its PRIMARY KEY`, {
        table,
        primaryKey: pkCols,
      });
    }
    const columns: ColumnModel[] = cols.map((c) => {
      const key = c.name.toLowerCase();
      const t = c.type.toUpperCase();
      const isBlob = t.includes('BLOB');
      let kind: ColumnKind = 'plain';
      if (isBlob) kind = keyNames.includes(key) || fkCols.has(key) ? 'uuid' : 'blob';
      else if (t.includes('BOOL')) kind = 'bool';
      else if (t.includes('JSON')) kind = 'json';
      return { name: c.name, key, declType: c.type, kind, isBlob };
    });
    const byKey = new Map(columns.map((c) => [c.key, c]));
    const keyColumns = keyNames.map((k) => {
      const c = byKey.get(k);
      if (!c) throw invalid(`sync key column ${table}.${k} does not exist`, { table, column: k });
      const t = c.declType.toUpperCase();
      if (!t.includes('TEXT') && !t.includes('BLOB')) {
        throw invalid(`${table}.${k}: supports only TEXT keys and UUID-backed BLOB keys`, {
          table,
          column: k,
          type: c.declType,
        });
      }
      return c;
    });
    const parents: string[] = [];
    for (const fk of fks) {
      const target = fk.table.toLowerCase();
      if (!managed.has(target)) {
        throw invalid(`not FK-closed: ${table}.${fk.from} -> ${target}.${fk.to ?? '(pk)'}`, {
          table,
          target,
        });
      }
      if (target !== table && !parents.includes(target)) parents.push(target);
    }
    const foreignKeys = foreignKeyModels(db, table, fks);
    models.push({
      table,
      quoted: quoteIdent(table),
      columns,
      byKey,
      keyColumns,
      parents,
      foreignKeys,
      order: 0,
    });
  }
  return topoSort(models);
}

/** Groups `PRAGMA foreign_key_list` rows by constraint; a missing `to` means the parent's primary key. */
function foreignKeyModels(db: SqliteDb, table: string, fks: readonly PragmaFk[]): ForeignKeyModel[] {
  const byId = new Map<number, PragmaFk[]>();
  for (const f of fks) byId.set(f.id, [...(byId.get(f.id) ?? []), f]);
  const out: ForeignKeyModel[] = [];
  for (const parts of byId.values()) {
    parts.sort((a, b) => a.seq - b.seq);
    const first = parts[0];
    if (!first) continue;
    const parent = first.table.toLowerCase();
    let to = parts.map((p) => p.to);
    if (to.some((t) => t === null)) {
      const pk = (db.prepare(`PRAGMA table_info(${quoteIdent(parent)})`).all() as PragmaColumn[])
        .filter((c) => c.pk > 0)
        .sort((a, b) => a.pk - b.pk)
        .map((c) => c.name);
      to = pk;
    }
    out.push({
      table,
      parent,
      from: parts.map((p) => p.from),
      to: to as string[],
      onDelete: String(first.on_delete ?? 'NO ACTION').toUpperCase(),
    });
  }
  return out;
}

/** Parent-first order; ties and cycle remainders keep configured order. */
function topoSort(models: TableModel[]): TableModel[] {
  const out: TableModel[] = [];
  const done = new Set<string>();
  let remaining = [...models];
  while (remaining.length > 0) {
    const ready = remaining.find((m) => m.parents.every((p) => done.has(p)));
    const next = ready ?? remaining[0];
    if (!next) break;
    out.push(next);
    done.add(next.table);
    remaining = remaining.filter((m) => m !== next);
  }
  out.forEach((m, i) => {
    m.order = i;
  });
  return out;
}

/** SQL expression for a column's local payload value (BLOBs as lowercase hex, NULL kept). */
function localValueExpr(alias: string, c: ColumnModel): string {
  const ref = `${alias}.${quoteIdent(c.name)}`;
  return c.isBlob ? `CASE WHEN ${ref} IS NULL THEN NULL ELSE lower(hex(${ref})) END` : ref;
}

/** `json_object(...)` of the key columns: the local key_json, built by SQLite (pitfall 4). */
export function keyJsonExpr(m: TableModel, alias: string): string {
  return `json_object(${m.keyColumns.map((c) => `${sqlString(c.key)}, ${localValueExpr(alias, c)}`).join(', ')})`;
}

/** `json_object(...)` of the key columns from bound parameters (local text forms). */
export function keyJsonFromParams(m: TableModel): string {
  return `json_object(${m.keyColumns.map((c) => `${sqlString(c.key)}, ?`).join(', ')})`;
}

/** `json_object(...)` of every column: the local payload. */
export function payloadExpr(m: TableModel, alias: string): string {
  return `json_object(${m.columns.map((c) => `${sqlString(c.key)}, ${localValueExpr(alias, c)}`).join(', ')})`;
}

export function triggerNames(table: string): string[] {
  return ['bi_guard', 'bu_guard', 'bd_guard', 'ai', 'au', 'ad'].map((s) => `trg_${table}_${s}`);
}

/** The six triggers of one managed table, by name. */
export function triggerSql(m: TableModel, schema: string): Map<string, string> {
  const t = m.table;
  const S = sqlString(schema);
  const T = sqlString(t);
  const applyMode = `(SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1)`;
  const opKind = `(SELECT kind FROM _sync_operation_state WHERE singleton_key = 1)`;
  const guardWhen = `${opKind} <> 'none' AND ${applyMode} <> 1`;
  const out = new Map<string, string>();
  for (const [suffix, ev] of [
    ['bi_guard', 'INSERT'],
    ['bu_guard', 'UPDATE'],
    ['bd_guard', 'DELETE'],
  ] as const) {
    out.set(
      `trg_${t}_${suffix}`,
      `CREATE TRIGGER trg_${t}_${suffix} BEFORE ${ev} ON ${m.quoted} WHEN ${guardWhen} BEGIN SELECT RAISE(ABORT, 'SYNC_TRANSITION_PENDING'); END`,
    );
  }
  const newKey = keyJsonExpr(m, 'NEW');
  const oldKey = keyJsonExpr(m, 'OLD');
  const rs = (key: string, extra = '') =>
    `(SELECT row_version FROM _sync_row_state WHERE schema_name = ${S} AND table_name = ${T} AND key_json = ${key}${extra})`;
  const now = `strftime('%Y-%m-%dT%H:%M:%fZ','now')`;
  const nextOrdinal = `COALESCE((SELECT MAX(dirty_ordinal) FROM _sync_dirty_rows), 0) + 1`;
  const upsert = `INSERT INTO _sync_dirty_rows(schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal, updated_at)
    VALUES (${S}, ${T}, ${newKey},
      CASE WHEN ${rs(newKey, ' AND deleted = 0')} IS NOT NULL THEN 'UPDATE' ELSE 'INSERT' END,
      COALESCE(${rs(newKey)}, 0), ${payloadExpr(m, 'NEW')}, ${nextOrdinal}, ${now})
    ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET op = excluded.op, payload = excluded.payload, updated_at = excluded.updated_at;`;
  const del = (
    cond: string,
  ) => `INSERT INTO _sync_dirty_rows(schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal, updated_at)
    SELECT ${S}, ${T}, ${oldKey}, 'DELETE', COALESCE(${rs(oldKey)}, 0), NULL, ${nextOrdinal}, ${now} WHERE ${cond}
    ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET op = 'DELETE', payload = NULL, updated_at = excluded.updated_at;`;
  const when = `WHEN ${applyMode} = 0`;
  out.set(
    `trg_${t}_ai`,
    `CREATE TRIGGER trg_${t}_ai AFTER INSERT ON ${m.quoted} ${when} BEGIN ${upsert} END`,
  );
  out.set(
    `trg_${t}_au`,
    `CREATE TRIGGER trg_${t}_au AFTER UPDATE ON ${m.quoted} ${when} BEGIN ${del(`${oldKey} <> ${newKey}`)} ${upsert} END`,
  );
  out.set(
    `trg_${t}_ad`,
    `CREATE TRIGGER trg_${t}_ad AFTER DELETE ON ${m.quoted} ${when} BEGIN ${del('1')} END`,
  );
  return out;
}

function normalizeSql(sql: string): string {
  return sql.replace(/\s+/g, ' ').trim().toLowerCase();
}

/** Creates or refreshes the triggers of every model; a trigger is rebuilt only when its SQL differs. */
export function installTriggers(db: SqliteDb, models: readonly TableModel[], schema: string): void {
  const existing = new Map(
    (
      db.prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'trigger'`).all() as Array<{
        name: string;
        sql: string;
      }>
    ).map((r) => [r.name, r.sql]),
  );
  for (const m of models) {
    for (const [name, sql] of triggerSql(m, schema)) {
      const cur = existing.get(name);
      if (cur !== undefined && normalizeSql(cur) === normalizeSql(sql)) continue;
      if (cur !== undefined) db.exec(`DROP TRIGGER ${quoteIdent(name)}`);
      db.exec(sql);
    }
    db.prepare(`INSERT OR IGNORE INTO _sync_managed_tables(schema_name, table_name) VALUES (?, ?)`).run(
      schema,
      m.table,
    );
  }
}

export function dropTriggers(db: SqliteDb, table: string): void {
  for (const name of triggerNames(table)) db.exec(`DROP TRIGGER IF EXISTS ${quoteIdent(name)}`);
}

/** Creates the triggers of `m` (after `dropTriggers`; `installTriggers` refreshes existing ones). */
export function createTriggers(db: SqliteDb, m: TableModel, schema: string): void {
  for (const sql of triggerSql(m, schema).values()) db.exec(sql);
}
