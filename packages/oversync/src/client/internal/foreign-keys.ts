import type { SqliteDb } from '../writer-types.js';
import { quoteIdent } from './local-schema.js';
import { stmt } from './statements.js';
import { type ForeignKeyModel, keyJsonExpr, payloadExpr, type TableModel } from './table-model.js';

/**
 * Foreign keys across authoritative applies.
 *
 * A device's tables are a mix of the server's state (applied bundle by bundle, or accepted in a
 * conflict) and local intents that the server has not seen. Neither alone always satisfies the
 * local foreign keys at the end of an apply transaction: an intermediate bundle of history may
 * reference a parent that a newer local version already deleted, an accepted server row may
 * reference a parent the device has not pulled yet, and a pulled delete may leave a local child
 * (of a RESTRICT / NO ACTION key) behind. Failing the transaction would wedge the device.
 *
 * Instead, every row written or deleted while applying is tracked, and before the transaction
 * commits each row whose parent is missing is moved, with its descendants, into
 * `_sync_orphan_rows` (the stash): invisible to the app, its row state and dirty intent kept. A
 * stashed row comes back, in the same kind of transaction, as soon as its parents exist again; a
 * newer server version or delete of the same key replaces it. A dirty intent on a stashed row is
 * still pushed: the server then accepts it (its parent exists there) or answers a `foreign_key`
 * conflict that the resolver decides. Nothing is lost and every commit passes its FK checks.
 */
export class ForeignKeyIndex {
  readonly #models: ReadonlyMap<string, TableModel>;
  /** FK edges by parent table. */
  readonly #children = new Map<string, ForeignKeyModel[]>();
  /** True when at least one managed table has a foreign key. */
  readonly active: boolean;

  constructor(models: readonly TableModel[]) {
    this.#models = new Map(models.map((m) => [m.table, m]));
    let any = false;
    for (const m of models) {
      for (const fk of m.foreignKeys) {
        if (!this.#models.has(fk.parent)) continue;
        any = true;
        this.#children.set(fk.parent, [...(this.#children.get(fk.parent) ?? []), fk]);
      }
    }
    this.active = any;
  }

  model(table: string): TableModel | undefined {
    return this.#models.get(table);
  }
  childEdges(table: string): readonly ForeignKeyModel[] {
    return this.#children.get(table) ?? [];
  }
  parentEdges(table: string): readonly ForeignKeyModel[] {
    return (this.#models.get(table)?.foreignKeys ?? []).filter((fk) => this.#models.has(fk.parent));
  }
}

type Bind = readonly unknown[];

const where = (cols: readonly string[], alias = '') =>
  cols.map((c) => `${alias}${quoteIdent(c)} = ?`).join(' AND ');

function keyWhere(m: TableModel): string {
  return where(m.keyColumns.map((c) => c.name));
}

/** True when the parent row that `values` (the FK's `to` columns) names exists. */
function parentExists(db: SqliteDb, fk: ForeignKeyModel, values: Bind): boolean {
  if (values.some((v) => v === null || v === undefined)) return true; // NULL never violates
  return (
    stmt(db, `SELECT 1 FROM ${quoteIdent(fk.parent)} WHERE ${where(fk.to)} LIMIT 1`).get(...values) !==
    undefined
  );
}

/** The FK's `from` values of one child row, or undefined when the row is absent. */
function childFkValues(db: SqliteDb, m: TableModel, fk: ForeignKeyModel, key: Bind): unknown[] | undefined {
  const r = stmt(
    db,
    `SELECT ${fk.from.map((c) => quoteIdent(c)).join(', ')} FROM ${m.quoted} WHERE ${keyWhere(m)}`,
  )
    .raw()
    .get(...key) as unknown[] | undefined;
  return r;
}

/** The FK's `to` values of one parent row, or undefined when the row is absent. */
function parentToValues(db: SqliteDb, m: TableModel, fk: ForeignKeyModel, key: Bind): unknown[] | undefined {
  return stmt(
    db,
    `SELECT ${fk.to.map((c) => quoteIdent(c)).join(', ')} FROM ${m.quoted} WHERE ${keyWhere(m)}`,
  )
    .raw()
    .get(...key) as unknown[] | undefined;
}

/** Key bind values of every child row that references `values` through `fk`. */
function childrenReferencing(
  db: SqliteDb,
  child: TableModel,
  fk: ForeignKeyModel,
  values: Bind,
): unknown[][] {
  if (values.some((v) => v === null || v === undefined)) return [];
  return stmt(
    db,
    `SELECT ${child.keyColumns.map((c) => quoteIdent(c.name)).join(', ')} FROM ${child.quoted} WHERE ${where(fk.from)}`,
  )
    .raw()
    .all(...values) as unknown[][];
}

/** A row's value for each named column, from a local payload (BLOBs as hex). */
export function payloadValues(
  m: TableModel,
  payload: Record<string, unknown>,
  cols: readonly string[],
): unknown[] {
  return cols.map((name) => {
    const c = m.byKey.get(name.toLowerCase());
    const v = payload[name.toLowerCase()];
    if (v === undefined || v === null) return null;
    if (c?.isBlob) return Buffer.from(String(v), 'hex');
    if (typeof v === 'boolean') return v ? 1 : 0;
    if (typeof v === 'object') return JSON.stringify(v);
    return v;
  });
}

function bindId(table: string, key: Bind): string {
  return `${table}\u0000${key.map((v) => (Buffer.isBuffer(v) ? `x${v.toString('hex')}` : `s${String(v)}`)).join('\u0000')}`;
}

export interface ReconcileResult {
  readonly stashed: number;
  readonly restored: number;
}

/**
 * The rows one apply transaction touched, and the FK reconciliation run before it commits.
 * Created by `beginApply` when the engine passes its index; `TableOps` reports to it.
 */
export class ApplyTracker {
  readonly #fk: ForeignKeyIndex;
  readonly #schema: string;
  readonly #upserts = new Map<string, { m: TableModel; key: Bind }>();
  readonly #deleted: Array<{ fk: ForeignKeyModel; values: Bind }> = [];
  /** Whether the stash holds rows (then every write must clear a stale entry of its key). */
  hasStash: boolean;
  #cascadeStashed = 0;
  #savesDeletedParents: boolean | undefined;

  constructor(db: SqliteDb, fk: ForeignKeyIndex, schema: string) {
    this.#fk = fk;
    this.#schema = schema;
    this.hasStash = stmt(db, `SELECT 1 FROM _sync_orphan_rows LIMIT 1`).get() !== undefined;
  }

  /** A row of `m` with `key` was inserted or updated. */
  noteUpsert(db: SqliteDb, m: TableModel, key: Bind): void {
    if (this.hasStash) this.#unstash(db, m, key);
    if (this.#fk.parentEdges(m.table).length > 0) this.#upserts.set(bindId(m.table, key), { m, key });
  }

  /** Called before a row of `m` with `key` is deleted. */
  beforeDelete(db: SqliteDb, m: TableModel, key: Bind): void {
    if (this.hasStash) this.#unstash(db, m, key);
    const edges = this.#fk.childEdges(m.table);
    if (edges.length === 0) return;
    for (const fk of edges) {
      const values = parentToValues(db, m, fk, key);
      if (!values) continue;
      this.#deleted.push({ fk, values });
      // A local ON DELETE CASCADE must not silently take rows the server did not delete with this
      // row: a child carrying an unpushed edit, or one already at a newer version (our own replayed
      // bundle applied before an older peer bundle). Children move to the stash instead; the
      // server's own cascade deletes, later in the same bundle, then remove them for good.
      if (fk.onDelete !== 'CASCADE') continue;
      const child = this.#fk.model(fk.table);
      if (!child) continue;
      const seen = new Set<string>();
      for (const ck of childrenReferencing(db, child, fk, values)) {
        this.#cascadeStashed += this.#stash(db, child, ck, seen);
      }
    }
    if (this.#keepsDeletedParents(db)) {
      const p = stmt(
        db,
        `SELECT ${payloadExpr(m, 't')}, ${keyJsonExpr(m, 't')} FROM ${m.quoted} AS t WHERE ${keyWhere(m)}`,
      )
        .raw()
        .get(...key) as [string, string] | undefined;
      if (p) {
        stmt(
          db,
          `INSERT INTO _sync_deleted_parents(schema_name, table_name, key_json, payload) VALUES (?, ?, ?, ?)
           ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET payload = excluded.payload`,
        ).run(this.#schema, m.table, p[1], p[0]);
      }
    }
  }

  /**
   * Remember the last payload of deleted parents while local intents of child tables are pending,
   * so a resolver can re-create the parent of a child it keeps.
   */
  #keepsDeletedParents(db: SqliteDb): boolean {
    if (this.#savesDeletedParents === undefined) {
      this.#savesDeletedParents =
        stmt(db, `SELECT 1 FROM _sync_dirty_rows WHERE payload IS NOT NULL LIMIT 1`).get() !== undefined;
    }
    return this.#savesDeletedParents;
  }

  #unstash(db: SqliteDb, m: TableModel, key: Bind): void {
    stmt(
      db,
      `DELETE FROM _sync_orphan_rows WHERE schema_name = ? AND table_name = ? AND key_json = (SELECT ${keyJsonExpr(
        m,
        'k',
      )} FROM (SELECT ${m.keyColumns.map((c) => `? AS ${quoteIdent(c.name)}`).join(', ')}) AS k)`,
    ).run(this.#schema, m.table, ...key);
  }

  /** Stashes every row left without a parent, then restores stashed rows whose parents are back. */
  reconcile(db: SqliteDb): ReconcileResult {
    const it = this.reconcileSliced(db);
    for (;;) {
      const r = it.next();
      if (r.done) return r.value;
    }
  }

  /**
   * `reconcile` as a generator that yields every 200 rows checked, for a long apply run in
   * slices (`TxRunner.sliced`): a 200k-row bundle's checks are not one block.
   */
  *reconcileSliced(db: SqliteDb): Generator<void, ReconcileResult, unknown> {
    const orphans: Array<{ m: TableModel; key: Bind }> = [];
    let n = 0;
    for (const { m, key } of this.#upserts.values()) {
      if (++n % 200 === 0) yield;
      for (const fk of this.#fk.parentEdges(m.table)) {
        const values = childFkValues(db, m, fk, key);
        if (values && !parentExists(db, fk, values)) {
          orphans.push({ m, key });
          break;
        }
      }
    }
    for (const { fk, values } of this.#deleted) {
      if (++n % 200 === 0) yield;
      if (parentExists(db, fk, values)) continue;
      const child = this.#fk.model(fk.table);
      if (!child) continue;
      for (const key of childrenReferencing(db, child, fk, values)) orphans.push({ m: child, key });
    }
    const seen = new Set<string>();
    let stashed = this.#cascadeStashed;
    this.#cascadeStashed = 0;
    for (const o of orphans) stashed += this.#stash(db, o.m, o.key, seen);
    const restored = this.hasStash || stashed > 0 ? restoreOrphans(db, this.#fk, this.#schema) : 0;
    this.#upserts.clear();
    this.#deleted.length = 0;
    return { stashed: Math.max(0, stashed - restored), restored };
  }

  /** Moves a row and (first) every row that references it into the stash. Returns rows stashed. */
  #stash(db: SqliteDb, m: TableModel, key: Bind, seen: Set<string>): number {
    const id = bindId(m.table, key);
    if (seen.has(id)) return 0;
    seen.add(id);
    let n = 0;
    for (const fk of this.#fk.childEdges(m.table)) {
      const child = this.#fk.model(fk.table);
      const values = parentToValues(db, m, fk, key);
      if (!child || !values) continue;
      for (const ck of childrenReferencing(db, child, fk, values)) n += this.#stash(db, child, ck, seen);
    }
    const row = stmt(
      db,
      `SELECT ${payloadExpr(m, 't')}, ${keyJsonExpr(m, 't')} FROM ${m.quoted} AS t WHERE ${keyWhere(m)}`,
    )
      .raw()
      .get(...key) as [string, string] | undefined;
    if (!row) return n;
    stmt(
      db,
      `INSERT INTO _sync_orphan_rows(schema_name, table_name, key_json, payload) VALUES (?, ?, ?, ?)
       ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET payload = excluded.payload`,
    ).run(this.#schema, m.table, row[1], row[0]);
    stmt(db, `DELETE FROM ${m.quoted} WHERE ${keyWhere(m)}`).run(...key);
    this.hasStash = true;
    return n + 1;
  }
}

/**
 * Puts stashed rows back whose parents all exist (parents first, repeated until nothing moves).
 * A stashed key that has a live row again was superseded: its stash entry is dropped.
 */
export function restoreOrphans(db: SqliteDb, fk: ForeignKeyIndex, schema: string): number {
  let restored = 0;
  for (;;) {
    const rows = stmt(
      db,
      `SELECT rowid, table_name, key_json, payload FROM _sync_orphan_rows WHERE schema_name = ? ORDER BY rowid`,
    ).all(schema) as Array<{ rowid: number; table_name: string; key_json: string; payload: string }>;
    let moved = false;
    for (const r of rows) {
      const m = fk.model(r.table_name);
      const drop = () => stmt(db, `DELETE FROM _sync_orphan_rows WHERE rowid = ?`).run(r.rowid);
      if (!m) {
        drop();
        continue;
      }
      const payload = JSON.parse(r.payload) as Record<string, unknown>;
      const key = payloadValues(
        m,
        payload,
        m.keyColumns.map((c) => c.name),
      );
      if (stmt(db, `SELECT 1 FROM ${m.quoted} WHERE ${keyWhere(m)}`).get(...key) !== undefined) {
        drop();
        moved = true;
        continue;
      }
      const ready = fk
        .parentEdges(m.table)
        .every((e) => parentExists(db, e, payloadValues(m, payload, e.from)) || selfReference(e, m, payload));
      if (!ready) continue;
      insertPayload(db, m, payload);
      drop();
      restored++;
      moved = true;
    }
    if (!moved) return restored + restoreCycles(db, fk, schema);
  }
}

/** Inserts a stashed row back into its table. */
function insertPayload(db: SqliteDb, m: TableModel, payload: Record<string, unknown>): void {
  const cols = m.columns.map((c) => quoteIdent(c.name));
  stmt(db, `INSERT INTO ${m.quoted}(${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`).run(
    ...payloadValues(
      m,
      payload,
      m.columns.map((c) => c.name),
    ),
  );
}

interface StashedRow {
  readonly rowid: number;
  readonly m: TableModel;
  readonly payload: Record<string, unknown>;
}

/**
 * Puts back, together, the stashed rows whose parents are each either present or another of
 * them: rows that reference each other in a cycle (list A under B, B under A, which a server
 * accepts with deferred keys) would otherwise each wait for the other for ever. The rows go back
 * in one step; the FK checks are deferred to COMMIT (apply mode), where the cycle is whole.
 */
function restoreCycles(db: SqliteDb, fk: ForeignKeyIndex, schema: string): number {
  const rows: StashedRow[] = [];
  for (const r of stmt(
    db,
    `SELECT rowid, table_name, payload FROM _sync_orphan_rows WHERE schema_name = ?`,
  ).all(schema) as Array<{ rowid: number; table_name: string; payload: string }>) {
    const m = fk.model(r.table_name);
    if (m) rows.push({ rowid: r.rowid, m, payload: JSON.parse(r.payload) as Record<string, unknown> });
  }
  if (rows.length < 2) return 0;
  const edgeId = (e: ForeignKeyModel, values: Bind) =>
    `${e.parent}\u0000${e.to.join(',')}\u0000${JSON.stringify(values)}`;
  // which stashed rows could serve as the parent named by (edge, values)
  const offered = new Map<string, StashedRow[]>();
  for (const r of rows) {
    for (const e of fk.childEdges(r.m.table)) {
      const id = edgeId(e, payloadValues(r.m, r.payload, e.to));
      offered.set(id, [...(offered.get(id) ?? []), r]);
    }
  }
  // the greatest set of stashed rows whose every parent is present, a self reference, or in the set
  const live = new Set(rows);
  for (let changed = true; changed; ) {
    changed = false;
    for (const r of live) {
      const ok = fk.parentEdges(r.m.table).every((e) => {
        const values = payloadValues(r.m, r.payload, e.from);
        if (selfReference(e, r.m, r.payload) || parentExists(db, e, values)) return true;
        return (offered.get(edgeId(e, values)) ?? []).some((p) => live.has(p));
      });
      if (!ok) {
        live.delete(r);
        changed = true;
      }
    }
  }
  for (const r of live) {
    insertPayload(db, r.m, r.payload);
    stmt(db, `DELETE FROM _sync_orphan_rows WHERE rowid = ?`).run(r.rowid);
  }
  return live.size;
}

/** A row that references itself (e.g. a root list pointing at its own id) needs no other parent. */
function selfReference(fk: ForeignKeyModel, m: TableModel, payload: Record<string, unknown>): boolean {
  if (fk.parent !== m.table) return false;
  return fk.from.every((f, i) => {
    const to = fk.to[i];
    return to !== undefined && payload[f.toLowerCase()] === payload[to.toLowerCase()];
  });
}
