import { ClientError } from '../errors.js';
import { type LocalPayload, wirePayloadToRow } from './codec.js';
import { ApplyTracker, type ForeignKeyIndex, payloadValues, type ReconcileResult } from './foreign-keys.js';
import { quoteIdent, sqlString } from './local-schema.js';
import { stmt } from './statements.js';
import { type ColumnModel, keyJsonFromParams, payloadExpr, type TableModel } from './table-model.js';
import type { SqliteDb } from './writer.js';

export type BindingState = 'anonymous' | 'attached';
export type OperationKind = 'none' | 'remote_replace' | 'source_recovery';

export interface AttachmentState {
  currentSourceId: string;
  bindingState: BindingState;
  attachedUserId: string;
  schemaName: string;
  lastBundleSeqSeen: number;
  rebuildRequired: boolean;
  pendingInitializationId: string;
}
export interface OperationState {
  kind: OperationKind;
  targetUserId: string;
  reason: string;
  replacementSourceId: string;
}
export interface OutboxState {
  state: 'none' | 'prepared' | 'committed_remote';
  sourceId: string;
  sourceBundleId: number;
  rowCount: number;
  initializationId: string;
  remoteBundleHash: string;
  remoteBundleSeq: number;
  unstructuredConflicts: number;
}

export function readAttachment(db: SqliteDb): AttachmentState {
  const r = stmt(db, `SELECT * FROM _sync_attachment_state WHERE singleton_key = 1`).get() as Record<
    string,
    unknown
  >;
  return {
    currentSourceId: String(r.current_source_id),
    bindingState: r.binding_state === 'attached' ? 'attached' : 'anonymous',
    attachedUserId: String(r.attached_user_id),
    schemaName: String(r.schema_name),
    lastBundleSeqSeen: Number(r.last_bundle_seq_seen),
    rebuildRequired: Number(r.rebuild_required) !== 0,
    pendingInitializationId: String(r.pending_initialization_id),
  };
}

export function readOperation(db: SqliteDb): OperationState {
  const r = stmt(db, `SELECT * FROM _sync_operation_state WHERE singleton_key = 1`).get() as Record<
    string,
    unknown
  >;
  return {
    kind: (r.kind as OperationKind) ?? 'none',
    targetUserId: String(r.target_user_id),
    reason: String(r.reason),
    replacementSourceId: String(r.replacement_source_id),
  };
}

export function setOperation(db: SqliteDb, op: Partial<OperationState> & { kind: OperationKind }): void {
  stmt(
    db,
    `UPDATE _sync_operation_state SET kind = ?, target_user_id = ?, reason = ?, replacement_source_id = ?,
       staged_snapshot_id = '', snapshot_bundle_seq = 0, snapshot_row_count = 0 WHERE singleton_key = 1`,
  ).run(op.kind, op.targetUserId ?? '', op.reason ?? '', op.replacementSourceId ?? '');
}

export function readOutbox(db: SqliteDb): OutboxState {
  const r = stmt(db, `SELECT * FROM _sync_outbox_bundle WHERE singleton_key = 1`).get() as Record<
    string,
    unknown
  >;
  return {
    state: r.state as OutboxState['state'],
    sourceId: String(r.source_id),
    sourceBundleId: Number(r.source_bundle_id),
    rowCount: Number(r.row_count),
    initializationId: String(r.initialization_id),
    remoteBundleHash: String(r.remote_bundle_hash),
    remoteBundleSeq: Number(r.remote_bundle_seq),
    unstructuredConflicts: Number(r.unstructured_conflicts ?? 0),
  };
}

export function clearOutbox(db: SqliteDb): void {
  stmt(db, `DELETE FROM _sync_outbox_rows`).run();
  stmt(
    db,
    `UPDATE _sync_outbox_bundle SET state = 'none', source_id = '', source_bundle_id = 0, canonical_request_hash = '',
       row_count = 0, initialization_id = '', remote_bundle_hash = '', remote_bundle_seq = 0, unstructured_conflicts = 0
     WHERE singleton_key = 1`,
  ).run();
}

export function countDirty(db: SqliteDb): number {
  return Number(stmt(db, `SELECT COUNT(*) AS n FROM _sync_dirty_rows`).pluck().get());
}
export function countOutbox(db: SqliteDb): number {
  return Number(stmt(db, `SELECT COUNT(*) AS n FROM _sync_outbox_rows`).pluck().get());
}

export function nextSourceBundleId(db: SqliteDb, sourceId: string): number {
  const v = stmt(db, `SELECT next_source_bundle_id FROM _sync_source_state WHERE source_id = ?`)
    .pluck()
    .get(sourceId);
  return v === undefined ? 1 : Number(v);
}

export function ensureSourceRow(db: SqliteDb, sourceId: string): void {
  stmt(db, `INSERT OR IGNORE INTO _sync_source_state(source_id) VALUES (?)`).run(sourceId);
}

export function raiseSourceFloor(db: SqliteDb, sourceId: string, next: number): void {
  ensureSourceRow(db, sourceId);
  stmt(
    db,
    `UPDATE _sync_source_state SET next_source_bundle_id = MAX(next_source_bundle_id, ?) WHERE source_id = ?`,
  ).run(next, sourceId);
}

export { stmt } from './statements.js';

const trackers = new WeakMap<SqliteDb, ApplyTracker>();

/**
 * Sets apply mode (triggers quiet, guards bypassed) and defers FK checks to COMMIT. With `fk`,
 * the rows written from here on are tracked so `endApply` can stash the ones left without a
 * parent (see foreign-keys.ts) instead of failing the commit.
 */
export function beginApply(db: SqliteDb, fk?: ForeignKeyIndex, schema = ''): void {
  db.pragma('defer_foreign_keys = ON');
  stmt(db, `UPDATE _sync_apply_state SET apply_mode = 1 WHERE singleton_key = 1`).run();
  trackers.delete(db);
  if (fk) trackForeignKeys(db, fk, schema);
}
/** Starts tracking writes for FK reconciliation (inside an apply begun without it). */
export function trackForeignKeys(db: SqliteDb, fk: ForeignKeyIndex, schema: string): void {
  if (fk.active) trackers.set(db, new ApplyTracker(db, fk, schema));
}
/** Reconciles foreign keys (when tracked) and leaves apply mode. */
export function endApply(db: SqliteDb): ReconcileResult | undefined {
  const t = trackers.get(db);
  trackers.delete(db);
  const r = t?.reconcile(db);
  stmt(db, `UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1`).run();
  return r;
}
/** The stashed local payload of a key whose row waits for its parent, if any. */
export function stashedPayload(
  db: SqliteDb,
  schema: string,
  table: string,
  keyJson: string,
): LocalPayload | undefined {
  const p = stmt(
    db,
    `SELECT payload FROM _sync_orphan_rows WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
  )
    .pluck()
    .get(schema, table, keyJson) as string | undefined;
  return p === undefined ? undefined : (JSON.parse(p) as LocalPayload);
}

/** Statements bound to one table model. */
export class TableOps {
  readonly m: TableModel;
  readonly schema: string;
  readonly #upsertSql: string;
  readonly #deleteSql: string;
  readonly #liveSql: string;
  readonly #keyWhere: string;

  constructor(m: TableModel, schema: string) {
    this.m = m;
    this.schema = schema;
    const cols = m.columns.map((c) => quoteIdent(c.name));
    const keyNames = new Set(m.keyColumns.map((c) => c.name));
    const nonKey = m.columns.filter((c) => !keyNames.has(c.name));
    this.#keyWhere = m.keyColumns.map((c) => `${quoteIdent(c.name)} = ?`).join(' AND ');
    this.#upsertSql = `INSERT INTO ${m.quoted}(${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})
      ON CONFLICT(${m.keyColumns.map((c) => quoteIdent(c.name)).join(', ')}) ${
        nonKey.length === 0
          ? 'DO NOTHING'
          : `DO UPDATE SET ${nonKey.map((c) => `${quoteIdent(c.name)} = excluded.${quoteIdent(c.name)}`).join(', ')}`
      }`;
    this.#deleteSql = `DELETE FROM ${m.quoted} WHERE ${this.#keyWhere}`;
    this.#liveSql = `SELECT ${payloadExpr(m, 't')} AS p FROM ${m.quoted} AS t WHERE ${m.keyColumns
      .map((c) => `t.${quoteIdent(c.name)} = ?`)
      .join(' AND ')}`;
  }

  /** Writes SQLite values (column order) with INSERT .. ON CONFLICT DO UPDATE (never REPLACE). */
  upsertValues(db: SqliteDb, values: unknown[]): void {
    stmt(db, this.#upsertSql).run(...values);
    const t = trackers.get(db);
    if (t)
      t.noteUpsert(
        db,
        this.m,
        this.m.keyColumns.map((c) => values[this.m.columns.indexOf(c)]),
      );
  }
  upsertWire(db: SqliteDb, payload: unknown): void {
    this.upsertValues(db, wirePayloadToRow(this.m, payload));
  }
  /** Writes a local-form payload (BLOBs as hex) back into the table. */
  upsertLocal(db: SqliteDb, payload: LocalPayload): void {
    this.upsertValues(
      db,
      payloadValues(
        this.m,
        payload,
        this.m.columns.map((c) => c.key),
      ),
    );
  }
  /**
   * True when every column converts inside SQLite (plain values, booleans, UUID BLOBs), so a
   * staged snapshot can be applied with one INSERT … SELECT instead of row by row in JS.
   */
  get setBased(): boolean {
    return this.m.columns.every((c) => c.kind === 'plain' || c.kind === 'bool' || c.kind === 'uuid');
  }

  /**
   * Applies this table's staged snapshot rows in one statement (the caller wiped the table) and
   * records their row state. Rows are checked first with the codec's rules (every column present,
   * UUIDs canonical); a bad row fails the whole apply. Returns the number of rows applied.
   */
  applyStagedSet(db: SqliteDb, snapshotId: string): number {
    const path = (c: ColumnModel) => sqlString(`$."${c.key.replaceAll('"', '""')}"`);
    const value = (c: ColumnModel) => `json_extract(payload, ${path(c)})`;
    const bad = this.m.columns.map((c) => {
      const missing = `json_type(payload, ${path(c)}) IS NULL`;
      if (c.kind !== 'uuid') return missing;
      const v = value(c);
      return `${missing} OR (${v} IS NOT NULL AND ${v} <> '' AND (json_type(payload, ${path(c)}) <> 'text'
        OR length(${v}) <> 36 OR ${v} <> lower(${v}) OR substr(${v}, 9, 1) <> '-' OR substr(${v}, 14, 1) <> '-'
        OR substr(${v}, 19, 1) <> '-' OR substr(${v}, 24, 1) <> '-'
        OR length(unhex(replace(${v}, '-', ''))) IS NOT 16))`;
    });
    const invalid = Number(
      stmt(
        db,
        `SELECT COUNT(*) FROM _sync_snapshot_stage WHERE snapshot_id = ? AND table_name = ? AND ((${bad.join(') OR (')}))`,
      )
        .pluck()
        .get(snapshotId, this.m.table),
    );
    if (invalid > 0) {
      throw new ClientError(
        'OVERSYNC_CLIENT_CODEC',
        `snapshot rows for ${this.m.table} do not fit its columns`,
        {
          details: { table: this.m.table, rows: invalid },
        },
      );
    }
    const exprs = this.m.columns.map((c) => {
      const v = value(c);
      return c.kind === 'uuid'
        ? `CASE WHEN ${v} IS NULL THEN NULL WHEN ${v} = '' THEN x'' ELSE unhex(replace(${v}, '-', '')) END`
        : v;
    });
    const applied = stmt(
      db,
      `INSERT INTO ${this.m.quoted}(${this.m.columns.map((c) => quoteIdent(c.name)).join(', ')})
       SELECT ${exprs.join(', ')} FROM _sync_snapshot_stage WHERE snapshot_id = ? AND table_name = ? ORDER BY row_ordinal`,
    ).run(snapshotId, this.m.table).changes;
    stmt(
      db,
      `INSERT INTO _sync_row_state(schema_name, table_name, key_json, row_version, deleted)
       SELECT ?, table_name, key_json, row_version, 0 FROM _sync_snapshot_stage WHERE snapshot_id = ? AND table_name = ?
       ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET row_version = excluded.row_version, deleted = 0`,
    ).run(this.schema, snapshotId, this.m.table);
    return applied;
  }

  delete(db: SqliteDb, keyBind: readonly unknown[]): void {
    trackers.get(db)?.beforeDelete(db, this.m, keyBind);
    stmt(db, this.#deleteSql).run(...keyBind);
  }
  /** The live row in local form, or, when it waits in the stash for its parent, the stashed row. */
  localRow(db: SqliteDb, keyBind: readonly unknown[], keyJson: string): LocalPayload | undefined {
    return this.live(db, keyBind) ?? stashedPayload(db, this.schema, this.m.table, keyJson);
  }
  /** The live row in local payload form, or undefined. */
  live(db: SqliteDb, keyBind: readonly unknown[]): LocalPayload | undefined {
    const p = stmt(db, this.#liveSql)
      .pluck()
      .get(...keyBind) as string | undefined;
    return p === undefined ? undefined : (JSON.parse(p) as LocalPayload);
  }
  rowState(db: SqliteDb, keyText: readonly string[]): { version: number; deleted: boolean } | undefined {
    const r = stmt(
      db,
      `SELECT row_version, deleted FROM _sync_row_state WHERE schema_name = ? AND table_name = ? AND key_json = ${keyJsonFromParams(this.m)}`,
    ).get(this.schema, this.m.table, ...keyText) as { row_version: number; deleted: number } | undefined;
    return r ? { version: Number(r.row_version), deleted: r.deleted !== 0 } : undefined;
  }
  setRowState(db: SqliteDb, keyText: readonly string[], version: number, deleted: boolean): void {
    stmt(
      db,
      `INSERT INTO _sync_row_state(schema_name, table_name, key_json, row_version, deleted, updated_at)
       VALUES (?, ?, ${keyJsonFromParams(this.m)}, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
       ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET row_version = excluded.row_version,
         deleted = excluded.deleted, updated_at = excluded.updated_at`,
    ).run(this.schema, this.m.table, ...keyText, version, deleted ? 1 : 0);
  }
  deleteRowState(db: SqliteDb, keyText: readonly string[]): void {
    stmt(
      db,
      `DELETE FROM _sync_row_state WHERE schema_name = ? AND table_name = ? AND key_json = ${keyJsonFromParams(this.m)}`,
    ).run(this.schema, this.m.table, ...keyText);
  }
  dirty(
    db: SqliteDb,
    keyText: readonly string[],
  ): { op: string; payload: string | null; base: number; keyJson: string } | undefined {
    const r = stmt(
      db,
      `SELECT op, payload, base_row_version, key_json FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ${keyJsonFromParams(this.m)}`,
    ).get(this.schema, this.m.table, ...keyText) as
      | { op: string; payload: string | null; base_row_version: number; key_json: string }
      | undefined;
    return r
      ? { op: r.op, payload: r.payload, base: Number(r.base_row_version), keyJson: r.key_json }
      : undefined;
  }
  deleteDirty(db: SqliteDb, keyText: readonly string[]): void {
    stmt(
      db,
      `DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ${keyJsonFromParams(this.m)}`,
    ).run(this.schema, this.m.table, ...keyText);
  }
  keyJson(db: SqliteDb, keyText: readonly string[]): string {
    return stmt(db, `SELECT ${keyJsonFromParams(this.m)}`)
      .pluck()
      .get(...keyText) as string;
  }
}

/**
 * Queues a local intent for `keyJson` with `base`. The op follows the row state (payload → UPDATE
 * when the server row is live, else INSERT; no payload → DELETE). `overwrite=false` keeps a newer
 * dirty row that already exists (a local edit made after the freeze is never replaced).
 */
export function requeueDirty(
  db: SqliteDb,
  schema: string,
  table: string,
  keyJson: string,
  payload: string | null,
  base: number,
  overwrite: boolean,
): void {
  const rs = stmt(
    db,
    `SELECT deleted FROM _sync_row_state WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
  ).get(schema, table, keyJson) as { deleted: number } | undefined;
  const op = payload === null ? 'DELETE' : rs && rs.deleted === 0 ? 'UPDATE' : 'INSERT';
  stmt(
    db,
    `INSERT INTO _sync_dirty_rows(schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, COALESCE((SELECT MAX(dirty_ordinal) FROM _sync_dirty_rows), 0) + 1, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
     ON CONFLICT(schema_name, table_name, key_json) DO ${
       overwrite
         ? 'UPDATE SET op = excluded.op, payload = excluded.payload, base_row_version = excluded.base_row_version, updated_at = excluded.updated_at'
         : 'UPDATE SET base_row_version = excluded.base_row_version'
     }`,
  ).run(schema, table, keyJson, op, base, payload);
}

export function protocolError(message: string, details: Record<string, unknown> = {}): ClientError {
  return new ClientError('OVERSYNC_CLIENT_PROTOCOL', message, { details });
}
