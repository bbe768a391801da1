/**
 * The local store: the SQL on the client's own `_sync_*` tables (identity and binding, the
 * operation in progress, the source sequence, dirty rows, the frozen outbox, the snapshot stage,
 * apply mode). Two neighbours keep their own tables: foreign-keys.ts the FK stash
 * (`_sync_orphan_rows`) and conflict-log.ts the conflict log; table-ops.ts holds the statements
 * bound to one business table (its rows, and its row state and dirty rows keyed by its key).
 * Every function runs inside a transaction the caller opened (`TxRunner.tx` or `.read`).
 *
 * Over 500 lines on purpose: issue #16 asks for every statement on the sync metadata in one place,
 * so a change to a `_sync_*` table is reviewed in one file; the sections below are that file's
 * concepts (singletons, binding, source sequence, apply mode, dirty rows, outbox, snapshot stage,
 * open/detach/uninstall).
 */

import { ClientError } from '../errors.js';
import type { PendingStatus } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { ApplyTracker, type ForeignKeyIndex, type ReconcileResult } from './foreign-keys.js';
import { METADATA_DDL, METADATA_TABLES, migrateMetadata, quoteIdent, sqlString } from './local-schema.js';
import { stmt } from './statements.js';
import { keyJsonExpr, payloadExpr, type TableModel } from './table-model.js';
import type { RowSource } from './table-ops.js';

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
/** One frozen outbox row, in its local and wire encodings. */
export interface OutboxRow {
  ordinal: number;
  table: string;
  keyJson: string;
  wireKeyJson: string;
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  base: number;
  localPayload: string | null;
  wirePayload: string | null;
}
/** Everything a push or pull checks before it starts, read once. */
export interface GateState {
  att: AttachmentState;
  op: OperationState;
  dirtyRows: number;
  outboxRows: number;
}

// ---- singletons: binding, operation, outbox --------------------------------------------------

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
/** Rows of one of the client's own tables (a size hint for `TxRunner.sliced`). */
export function countRows(db: SqliteDb, table: '_sync_push_stage' | '_sync_snapshot_stage'): number {
  return Number(stmt(db, `SELECT COUNT(*) FROM ${table}`).pluck().get());
}
export function countOutbox(db: SqliteDb): number {
  return Number(stmt(db, `SELECT COUNT(*) AS n FROM _sync_outbox_rows`).pluck().get());
}

export function readGate(db: SqliteDb): GateState {
  return {
    att: readAttachment(db),
    op: readOperation(db),
    dirtyRows: countDirty(db),
    outboxRows: countOutbox(db),
  };
}

export function readPending(db: SqliteDb): PendingStatus {
  const att = readAttachment(db);
  const dirtyRows = countDirty(db);
  const outboxRows = countOutbox(db);
  const pendingInitialization = att.pendingInitializationId !== '';
  const total = dirtyRows + outboxRows + (pendingInitialization ? 1 : 0);
  return { dirtyRows, outboxRows, pendingInitialization, total, blocksDetach: total > 0 };
}

/** True when some server row is materialised locally. */
export function hasLiveRows(db: SqliteDb): boolean {
  return Boolean(stmt(db, `SELECT EXISTS(SELECT 1 FROM _sync_row_state WHERE deleted = 0)`).pluck().get());
}

// ---- binding changes ----------------------------------------------------------------------------

export function bindAttached(db: SqliteDb, user: string, initializationId: string): void {
  stmt(
    db,
    `UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = ?,
       pending_initialization_id = ?, rebuild_required = 0 WHERE singleton_key = 1`,
  ).run(user, initializationId);
  stmt(
    db,
    `UPDATE _sync_outbox_bundle SET initialization_id = ? WHERE singleton_key = 1 AND state = 'prepared'`,
  ).run(initializationId);
  setOperation(db, { kind: 'none' });
}

export function beginRemoteReplace(db: SqliteDb, user: string): void {
  stmt(
    db,
    `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '',
       pending_initialization_id = '' WHERE singleton_key = 1`,
  ).run();
  setOperation(db, { kind: 'remote_replace', targetUserId: user });
}

/** The seed lease is lost: back to anonymous, and the outbox no longer names the lease. */
export function dropSeedLease(db: SqliteDb): void {
  stmt(
    db,
    `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '',
       pending_initialization_id = '' WHERE singleton_key = 1`,
  ).run();
  stmt(db, `UPDATE _sync_outbox_bundle SET initialization_id = '' WHERE singleton_key = 1`).run();
}

export function markRebuildRequired(db: SqliteDb): void {
  stmt(db, `UPDATE _sync_attachment_state SET rebuild_required = 1 WHERE singleton_key = 1`).run();
}

/** Records (or keeps) a source recovery; a replacement id already reserved is kept. */
export function enterSourceRecovery(db: SqliteDb, reason: string, replacement: string): void {
  const op = readOperation(db);
  const reserved = op.kind === 'source_recovery' ? op.replacementSourceId : '';
  markRebuildRequired(db);
  setOperation(db, { kind: 'source_recovery', reason, replacementSourceId: replacement || reserved });
}

// ---- source sequence ----------------------------------------------------------------------------

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

/** A random source id this database has never used. */
export function generateSourceId(db: SqliteDb, current: string): string {
  for (let i = 0; i < 100; i++) {
    const id = crypto.randomUUID();
    if (id === current) continue;
    const taken = stmt(db, `SELECT 1 FROM _sync_source_state WHERE source_id = ?`).get(id);
    if (!taken) return id;
  }
  throw new ClientError('OVERSYNC_CLIENT_LOCAL_WRITE', 'could not generate a fresh source id');
}

/** Reserves the replacement source of a recovery (kept across restarts until it is applied). */
export function reserveReplacementSource(db: SqliteDb, current: string, reason: string): string {
  const id = generateSourceId(db, current);
  setOperation(db, { kind: 'source_recovery', reason, replacementSourceId: id });
  return id;
}

/** Retires `from` in favour of the fresh source `to`. */
export function rotateSource(db: SqliteDb, from: string, to: string): void {
  ensureSourceRow(db, to);
  const fresh = stmt(
    db,
    `SELECT next_source_bundle_id, replaced_by_source_id FROM _sync_source_state WHERE source_id = ?`,
  ).get(to) as { next_source_bundle_id: number; replaced_by_source_id: string };
  if (Number(fresh.next_source_bundle_id) !== 1 || fresh.replaced_by_source_id !== '') {
    throw new ClientError('OVERSYNC_CLIENT_PROTOCOL', 'replacement source is not fresh', {
      details: { sourceId: to },
    });
  }
  stmt(db, `UPDATE _sync_source_state SET replaced_by_source_id = ? WHERE source_id = ?`).run(to, from);
}

// ---- apply mode -----------------------------------------------------------------------------------

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
/** The FK tracker of the apply running on `db`, if any (table-ops.ts reports writes to it). */
export function applyTracker(db: SqliteDb): ApplyTracker | undefined {
  return trackers.get(db);
}
/** Reconciles foreign keys (when tracked) and leaves apply mode. */
export function endApply(db: SqliteDb): ReconcileResult | undefined {
  const t = trackers.get(db);
  trackers.delete(db);
  const r = t?.reconcile(db);
  stmt(db, `UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1`).run();
  return r;
}

/** `endApply` for an apply run in slices: the FK reconciliation yields as it goes. */
export function* endApplySliced(db: SqliteDb): Generator<void, ReconcileResult | undefined, unknown> {
  const t = trackers.get(db);
  trackers.delete(db);
  const r = t ? yield* t.reconcileSliced(db) : undefined;
  stmt(db, `UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1`).run();
  return r;
}

// ---- dirty rows -----------------------------------------------------------------------------------

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

/** Moves one dirty row ahead of every other, so it is pushed first. */
export function moveDirtyToFront(db: SqliteDb, schema: string, table: string, keyJson: string): void {
  stmt(
    db,
    `UPDATE _sync_dirty_rows SET dirty_ordinal = (SELECT MIN(dirty_ordinal) FROM _sync_dirty_rows) - 1
     WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
  ).run(schema, table, keyJson);
}

/**
 * One page of the dirty rows of `tables`, upserts (payload) or deletes (no payload), in
 * (dirty_ordinal, table_name, key_json) order after `after`: keyset paging that walks the
 * ordinal index from where the last page ended (never a scan and sort of the whole set per page).
 */
export function readDirtyPage(
  db: SqliteDb,
  schema: string,
  tables: readonly string[],
  deletes: boolean,
  after: readonly [number, string, string] | undefined,
  limit: number,
) {
  const list = tables.map((t) => sqlString(t)).join(', ');
  return stmt(
    db,
    `SELECT d.rowid AS rid, d.table_name, d.key_json, d.base_row_version, d.payload, d.dirty_ordinal, rs.deleted AS rs_deleted
     FROM _sync_dirty_rows d INDEXED BY _sync_dirty_rows_ordinal_idx LEFT JOIN _sync_row_state rs
       ON rs.schema_name = d.schema_name AND rs.table_name = d.table_name AND rs.key_json = d.key_json
     WHERE d.dirty_ordinal >= ? AND (d.dirty_ordinal > ? OR (d.table_name, d.key_json) > (?, ?))
       AND d.schema_name = ? AND d.table_name IN (${list}) AND d.payload IS ${deletes ? '' : 'NOT '}NULL
     ORDER BY d.dirty_ordinal, d.table_name, d.key_json LIMIT ${limit}`,
  ).all(
    after?.[0] ?? Number.MIN_SAFE_INTEGER,
    after?.[0] ?? Number.MIN_SAFE_INTEGER,
    after?.[1] ?? '',
    after?.[2] ?? '',
    schema,
  ) as Array<{
    rid: number;
    table_name: string;
    key_json: string;
    base_row_version: number;
    payload: string | null;
    dirty_ordinal: number;
    rs_deleted: number | null;
  }>;
}

/**
 * Deletes the dirty rows of a page readDirtyPage returned, by their rowids, in one statement (a
 * long freeze's statements are calls to the apply worker: one per page instead of one per row).
 */
export function deleteDirtyRowids(db: SqliteDb, rowids: readonly number[]): void {
  if (rowids.length === 0) return;
  stmt(db, `DELETE FROM _sync_dirty_rows WHERE rowid IN (SELECT value FROM json_each(?))`).run(
    JSON.stringify(rowids),
  );
}

/** Every dirty row of the schema as written (for the conflict log and rebuild carry-over). */
export function listDirtyIntents(db: SqliteDb, schema?: string): Array<Record<string, unknown>> {
  return schema === undefined
    ? (stmt(
        db,
        `SELECT table_name, key_json, op, base_row_version, payload FROM _sync_dirty_rows`,
      ).all() as Array<Record<string, unknown>>)
    : (stmt(
        db,
        `SELECT table_name, key_json, op, base_row_version, payload FROM _sync_dirty_rows WHERE schema_name = ?`,
      ).all(schema) as Array<Record<string, unknown>>);
}

// ---- the frozen outbox ---------------------------------------------------------------------------

/** One frozen row at `ordinal` of bundle `sbid` (the freeze writes them in push order). */
export function insertOutboxRow(
  db: SqliteDb,
  schema: string,
  sbid: number,
  ordinal: number,
  r: Omit<OutboxRow, 'ordinal'>,
): void {
  stmt(
    db,
    `INSERT INTO _sync_outbox_rows(source_bundle_id, row_ordinal, schema_name, table_name, key_json, wire_key_json,
       op, base_row_version, local_payload, wire_payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    sbid,
    ordinal,
    schema,
    r.table,
    r.keyJson,
    r.wireKeyJson,
    r.op,
    r.base,
    r.localPayload,
    r.wirePayload,
  );
}

/** The frozen rows are written: the outbox is prepared as bundle `sbid` of `rowCount` rows. */
export function markOutboxPrepared(db: SqliteDb, att: AttachmentState, sbid: number, rowCount: number): void {
  stmt(
    db,
    `UPDATE _sync_outbox_bundle SET state = 'prepared', source_id = ?, source_bundle_id = ?, row_count = ?,
       initialization_id = ?, canonical_request_hash = '', remote_bundle_hash = '', remote_bundle_seq = 0,
       unstructured_conflicts = 0 WHERE singleton_key = 1`,
  ).run(att.currentSourceId, sbid, rowCount, att.pendingInitializationId);
}

/**
 * The frozen bundle's id: every outbox row carries it, so paging by row_ordinal under it walks the
 * primary key instead of scanning and sorting the whole outbox for each page.
 */
export const OUTBOX_SBID = `SELECT source_bundle_id FROM _sync_outbox_bundle WHERE singleton_key = 1`;

export function readOutboxRows(db: SqliteDb, from = 0, limit = -1): OutboxRow[] {
  const rs = stmt(
    db,
    `SELECT row_ordinal, table_name, key_json, wire_key_json, op, base_row_version, local_payload, wire_payload
     FROM _sync_outbox_rows WHERE source_bundle_id = (${OUTBOX_SBID}) AND row_ordinal >= ?
     ORDER BY row_ordinal LIMIT ?`,
  ).all(from, limit) as Array<Record<string, unknown>>;
  return rs.map((r) => ({
    ordinal: Number(r.row_ordinal),
    table: String(r.table_name),
    keyJson: String(r.key_json),
    wireKeyJson: String(r.wire_key_json),
    op: r.op as OutboxRow['op'],
    base: Number(r.base_row_version),
    localPayload: (r.local_payload as string | null) ?? null,
    wirePayload: (r.wire_payload as string | null) ?? null,
  }));
}

/** Every frozen row, as replay compares it with the committed bundle. */
export function readFrozenRows(db: SqliteDb) {
  return stmt(
    db,
    `SELECT table_name, key_json, wire_key_json, op, base_row_version, local_payload FROM _sync_outbox_rows`,
  ).all() as Array<{
    table_name: string;
    key_json: string;
    wire_key_json: string;
    op: string;
    base_row_version: number;
    local_payload: string | null;
  }>;
}

/** The frozen row for one key, by its wire key. */
export function outboxRowByWireKey(db: SqliteDb, table: string, wireKeyJson: string) {
  return stmt(
    db,
    `SELECT key_json, op, base_row_version, local_payload FROM _sync_outbox_rows WHERE table_name = ? AND wire_key_json = ?`,
  ).get(table, wireKeyJson) as
    | { key_json: string; op: string; base_row_version: number; local_payload: string | null }
    | undefined;
}

export function markOutboxCommitted(db: SqliteDb, bundleSeq: number, bundleHash: string): void {
  stmt(
    db,
    `UPDATE _sync_outbox_bundle SET state = 'committed_remote', remote_bundle_seq = ?, remote_bundle_hash = ?
     WHERE singleton_key = 1`,
  ).run(bundleSeq, bundleHash);
  stmt(db, `UPDATE _sync_attachment_state SET pending_initialization_id = '' WHERE singleton_key = 1`).run();
}

/** Counts one more opaque push conflict on the frozen bundle; returns the count. */
export function countUnstructuredConflict(db: SqliteDb): number {
  stmt(
    db,
    `UPDATE _sync_outbox_bundle SET unstructured_conflicts = unstructured_conflicts + 1 WHERE singleton_key = 1`,
  ).run();
  return readOutbox(db).unstructuredConflicts;
}

/** After a replay: the checkpoint (when contiguous), the source floor, and the outbox cleared. */
export function finishReplay(
  db: SqliteDb,
  meta: { bundleSeq: number; sourceId: string; sourceBundleId: number },
): number {
  const att = readAttachment(db);
  let lastSeen = att.lastBundleSeqSeen;
  if (meta.bundleSeq === att.lastBundleSeqSeen + 1) {
    lastSeen = meta.bundleSeq;
    stmt(db, `UPDATE _sync_attachment_state SET last_bundle_seq_seen = ? WHERE singleton_key = 1`).run(
      meta.bundleSeq,
    );
  }
  raiseSourceFloor(db, meta.sourceId, meta.sourceBundleId + 1);
  clearOutbox(db);
  stmt(db, `DELETE FROM _sync_push_stage`).run();
  stmt(db, `UPDATE _sync_attachment_state SET pending_initialization_id = '' WHERE singleton_key = 1`).run();
  // Parents' last payloads are kept only while some local intent may need to re-create one.
  stmt(
    db,
    `DELETE FROM _sync_deleted_parents WHERE NOT EXISTS (SELECT 1 FROM _sync_dirty_rows WHERE payload IS NOT NULL)`,
  ).run();
  return lastSeen;
}

// ---- pull checkpoint and deleted parents --------------------------------------------------------

export function advanceCheckpoint(db: SqliteDb, bundleSeq: number): void {
  stmt(
    db,
    `UPDATE _sync_attachment_state SET last_bundle_seq_seen = MAX(last_bundle_seq_seen, ?) WHERE singleton_key = 1`,
  ).run(bundleSeq);
}

export function deletedParentPayload(db: SqliteDb, schema: string, table: string, keyJson: string) {
  return stmt(
    db,
    `SELECT payload FROM _sync_deleted_parents WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
  )
    .pluck()
    .get(schema, table, keyJson) as string | undefined;
}

export function forgetDeletedParent(db: SqliteDb, schema: string, table: string, keyJson: string): void {
  stmt(db, `DELETE FROM _sync_deleted_parents WHERE schema_name = ? AND table_name = ? AND key_json = ?`).run(
    schema,
    table,
    keyJson,
  );
}

// ---- snapshot stage ----------------------------------------------------------------------------------

/** A rebuild starts: the gate is set (an interrupted rebuild is resumed) and the stage emptied. */
export function beginRebuild(db: SqliteDb): void {
  markRebuildRequired(db);
  stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
}

export function stageSnapshotRow(
  db: SqliteDb,
  m: TableModel,
  keyJsonSql: string,
  row: {
    snapshotId: string;
    ordinal: number;
    schema: string;
    keyText: readonly string[];
    version: number;
    payload: string;
  },
): void {
  stmt(
    db,
    `INSERT INTO _sync_snapshot_stage(snapshot_id, row_ordinal, schema_name, table_name, key_json, row_version, payload)
     VALUES (?, ?, ?, ?, ${keyJsonSql}, ?, ?)`,
  ).run(row.snapshotId, row.ordinal, row.schema, m.table, ...row.keyText, row.version, row.payload);
}

/** The staged rows of `table` with ordinals in (after, to], as a `RowSource` (table-ops.ts). */
export function stagedSource(snapshotId: string, after: number, to: number, table: string): RowSource {
  return {
    sql: `SELECT key_json, row_version, payload FROM _sync_snapshot_stage
      WHERE snapshot_id = ? AND row_ordinal > ? AND row_ordinal <= ? AND table_name = ? ORDER BY row_ordinal`,
    params: [snapshotId, after, to, table],
  };
}

/** The names of the tables with staged rows with ordinals in (after, to]. */
export function stagedTables(db: SqliteDb, snapshotId: string, after: number, to: number): string[] {
  return stmt(
    db,
    `SELECT DISTINCT table_name FROM _sync_snapshot_stage WHERE snapshot_id = ? AND row_ordinal > ? AND row_ordinal <= ?`,
  )
    .pluck()
    .all(snapshotId, after, to) as string[];
}

export function setRowStateLive(
  db: SqliteDb,
  schema: string,
  table: string,
  keyJson: string,
  version: number,
): void {
  stmt(
    db,
    `INSERT INTO _sync_row_state(schema_name, table_name, key_json, row_version, deleted) VALUES (?, ?, ?, ?, 0)
     ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET row_version = excluded.row_version, deleted = 0`,
  ).run(schema, table, keyJson, version);
}

export function rowVersionOf(
  db: SqliteDb,
  schema: string,
  table: string,
  keyJson: string,
): number | undefined {
  return stmt(
    db,
    `SELECT row_version FROM _sync_row_state WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
  )
    .pluck()
    .get(schema, table, keyJson) as number | undefined;
}

/** Frozen outbox rows as local intents (rebuild carry-over and the conflict log). */
export function listOutboxIntents(db: SqliteDb): Array<Record<string, unknown>> {
  return stmt(
    db,
    `SELECT table_name, key_json, op, base_row_version, local_payload AS payload FROM _sync_outbox_rows`,
  ).all() as Array<Record<string, unknown>>;
}

/** Every table that ever had triggers installed under `schema`. */
export function managedTables(db: SqliteDb, schema?: string): string[] {
  return (
    schema === undefined
      ? stmt(db, `SELECT table_name FROM _sync_managed_tables`).pluck().all()
      : stmt(db, `SELECT table_name FROM _sync_managed_tables WHERE schema_name = ?`).pluck().all(schema)
  ) as string[];
}

/**
 * Deletes the rows of `table` that match `where`, `slice` rows per statement, yielding after each
 * (a long apply gives the event loop a turn between slices; see `TxRunner.sliced`). 500 rows: one
 * statement of 2,000 stage rows with their index entries was a 50+ ms block of a 200k-row replay.
 */
export function* deleteInSlices(
  db: SqliteDb,
  table: string,
  keyColumns: readonly string[],
  where = 'true',
  params: readonly unknown[] = [],
  slice = 500,
): Generator<void, number, unknown> {
  const t = quoteIdent(table);
  const k = keyColumns.map((c) => quoteIdent(c)).join(', ');
  const sql = `DELETE FROM ${t} WHERE (${k}) IN (SELECT ${k} FROM ${t} WHERE ${where} LIMIT ${slice})`;
  let n = 0;
  for (;;) {
    const c = stmt(db, sql).run(...params).changes;
    n += c;
    if (c === 0) return n;
    yield;
  }
}

/** The snapshot swap's wipe of sync state (the business tables are wiped by the caller). */
export function* clearForSnapshot(db: SqliteDb, schema: string): Generator<void, void, unknown> {
  yield* deleteInSlices(db, '_sync_row_state', ['schema_name', 'table_name', 'key_json'], 'schema_name = ?', [
    schema,
  ]);
  stmt(db, `DELETE FROM _sync_dirty_rows`).run();
  yield* deleteInSlices(db, '_sync_push_stage', ['bundle_seq', 'row_ordinal']);
  stmt(db, `DELETE FROM _sync_orphan_rows WHERE schema_name = ?`).run(schema);
  clearOutbox(db);
}

/** The snapshot is applied: binding (remote replace), source, checkpoint, gate and stage. */
export function finishSnapshot(
  db: SqliteDb,
  p: { sourceId: string; bundleSeq: number; bindUser?: string | undefined },
): void {
  if (p.bindUser) {
    stmt(
      db,
      `UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = ?, pending_initialization_id = ''
       WHERE singleton_key = 1`,
    ).run(p.bindUser);
  }
  stmt(
    db,
    `UPDATE _sync_attachment_state SET current_source_id = ?, last_bundle_seq_seen = ?, rebuild_required = 0
     WHERE singleton_key = 1`,
  ).run(p.sourceId, p.bundleSeq);
}

export function clearSnapshotStage(db: SqliteDb): void {
  stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
}

/** Stages one committed row of our own pushed bundle (replayed from the stage). */
export function stagePushRow(
  db: SqliteDb,
  keyJsonSql: string,
  row: {
    bundleSeq: number;
    ordinal: number;
    schema: string;
    table: string;
    keyText: readonly string[];
    op: string;
    version: number;
    payload: string | null;
  },
): void {
  stmt(
    db,
    `INSERT INTO _sync_push_stage(bundle_seq, row_ordinal, schema_name, table_name, key_json, op, row_version, payload)
     VALUES (?, ?, ?, ?, ${keyJsonSql}, ?, ?, ?)`,
  ).run(row.bundleSeq, row.ordinal, row.schema, row.table, ...row.keyText, row.op, row.version, row.payload);
}

/** Deletes the staged rows with ordinals in (after, to] (applied in the same transaction). */
export function dropStagedRange(db: SqliteDb, snapshotId: string, after: number, to: number): void {
  stmt(
    db,
    `DELETE FROM _sync_snapshot_stage WHERE snapshot_id = ? AND row_ordinal > ? AND row_ordinal <= ?`,
  ).run(snapshotId, after, to);
}

// ---- open, detach, uninstall ------------------------------------------------------------------

/** Creates or migrates the metadata tables, leaves apply mode, checks the one-schema scope. */
export function openMetadata(db: SqliteDb, schema: string): void {
  db.exec(METADATA_DDL);
  migrateMetadata(db);
  stmt(db, `UPDATE _sync_apply_state SET apply_mode = 0 WHERE singleton_key = 1`).run();
  const scopes = new Set(
    (
      db
        .prepare(
          `SELECT schema_name FROM _sync_attachment_state WHERE schema_name <> ''
           UNION SELECT schema_name FROM _sync_row_state UNION SELECT schema_name FROM _sync_dirty_rows
           UNION SELECT schema_name FROM _sync_managed_tables`,
        )
        .pluck()
        .all() as string[]
    ).filter((s) => s !== ''),
  );
  for (const s of scopes) {
    if (s !== schema) {
      throw new ClientError(
        'OVERSYNC_CLIENT_SCHEMA_SCOPE_CONFLICT',
        `exactly one configured schema per local database: found ${s}, configured ${schema}`,
        { details: { found: s, configured: schema } },
      );
    }
  }
}

/** First open (or after uninstall): the rows already in `m` become local intents. */
export function seedDirtyFromTable(db: SqliteDb, schema: string, m: TableModel): void {
  db.prepare(
    `INSERT INTO _sync_dirty_rows(schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal)
     SELECT ?, ?, ${keyJsonExpr(m, 't')}, 'INSERT', 0, ${payloadExpr(m, 't')},
       COALESCE((SELECT MAX(dirty_ordinal) FROM _sync_dirty_rows), 0) + ROW_NUMBER() OVER ()
     FROM ${m.quoted} AS t WHERE true
     ON CONFLICT(schema_name, table_name, key_json) DO NOTHING`,
  ).run(schema, m.table);
}

export function setSourceAndSchema(db: SqliteDb, sourceId: string, schema: string): void {
  ensureSourceRow(db, sourceId);
  stmt(
    db,
    `UPDATE _sync_attachment_state SET current_source_id = ?, schema_name = ? WHERE singleton_key = 1`,
  ).run(sourceId, schema);
}

/**
 * Detach's wipe: the business tables named, all sync state, the FK stash and the conflict log
 * (the next user must not see this one's data), and a fresh source (the next user's first push
 * starts at source_bundle_id 1 and the checkpoint restarts at 0). Returns the new source id.
 */
export function wipeForDetach(db: SqliteDb, tables: Iterable<string>): string {
  const existing = new Set(
    db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all() as string[],
  );
  for (const t of tables) {
    if (existing.has(t)) db.exec(`DELETE FROM ${quoteIdent(t)}`);
  }
  stmt(db, `DELETE FROM _sync_row_state`).run();
  stmt(db, `DELETE FROM _sync_dirty_rows`).run();
  stmt(db, `DELETE FROM _sync_push_stage`).run();
  stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
  stmt(db, `DELETE FROM _sync_orphan_rows`).run();
  stmt(db, `DELETE FROM _sync_deleted_parents`).run();
  stmt(db, `DELETE FROM _sync_conflicts`).run();
  clearOutbox(db);
  const att = readAttachment(db);
  const next = generateSourceId(db, att.currentSourceId);
  ensureSourceRow(db, next);
  stmt(
    db,
    `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '', pending_initialization_id = '',
       current_source_id = ?, last_bundle_seq_seen = 0, rebuild_required = 0 WHERE singleton_key = 1`,
  ).run(next);
  setOperation(db, { kind: 'none' });
  return next;
}

export function dropMetadata(db: SqliteDb): void {
  for (const t of METADATA_TABLES) db.exec(`DROP TABLE IF EXISTS ${t}`);
}
