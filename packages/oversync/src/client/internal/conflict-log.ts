import type {
  ConflictQuery,
  ConflictReason,
  ConflictRecord,
  ConflictResolution,
  ConflictRule,
} from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { stmt } from './statements.js';

/** What one resolved conflict leaves in `_sync_conflicts`. */
export interface ConflictEntry {
  readonly schema: string;
  readonly table: string;
  readonly keyJson: string;
  readonly wireKey: Readonly<Record<string, string>>;
  readonly reason: ConflictReason;
  readonly localOp: string;
  readonly localPayload: string | null;
  readonly baseRowVersion: number;
  readonly serverRowVersion: number;
  readonly serverRowDeleted: boolean;
  readonly serverRow: unknown;
  readonly resolution: ConflictResolution['kind'];
  readonly rule: ConflictRule;
  /** True when the local intent did not survive (the server's state was taken). */
  readonly localLost: boolean;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Appends one entry (inside the transaction that applied its plan) and returns its id. */
export function recordConflict(db: SqliteDb, e: ConflictEntry): number {
  const r = stmt(
    db,
    `INSERT INTO _sync_conflicts(schema_name, table_name, key_json, wire_key_json, reason, local_op, local_payload,
       base_row_version, server_row_version, server_row_deleted, server_row, resolution, rule, local_lost, details)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  ).run(
    e.schema,
    e.table,
    e.keyJson,
    JSON.stringify(e.wireKey),
    e.reason,
    e.localOp,
    e.localPayload,
    e.baseRowVersion,
    e.serverRowVersion,
    e.serverRowDeleted ? 1 : 0,
    e.serverRow === null || e.serverRow === undefined ? null : JSON.stringify(e.serverRow),
    e.resolution,
    e.rule,
    e.localLost ? 1 : 0,
    JSON.stringify(e.details ?? {}),
  );
  return Number(r.lastInsertRowid);
}

export function listConflicts(db: SqliteDb, q: ConflictQuery = {}): ConflictRecord[] {
  const rows = stmt(
    db,
    `SELECT * FROM _sync_conflicts WHERE conflict_id > ? AND (? = 0 OR local_lost = 1) AND (? IS NULL OR table_name = ?)
     ORDER BY conflict_id LIMIT ?`,
  ).all(q.afterId ?? 0, q.lostOnly ? 1 : 0, q.table ?? null, q.table ?? null, q.limit ?? 1000) as Array<
    Record<string, unknown>
  >;
  return rows.map(toRecord);
}

export function readConflict(db: SqliteDb, id: number): ConflictRecord {
  return toRecord(
    stmt(db, `SELECT * FROM _sync_conflicts WHERE conflict_id = ?`).get(id) as Record<string, unknown>,
  );
}

function toRecord(r: Record<string, unknown>): ConflictRecord {
  const parse = (v: unknown) => (v === null || v === undefined ? null : (JSON.parse(String(v)) as unknown));
  return {
    id: Number(r.conflict_id),
    schema: String(r.schema_name),
    table: String(r.table_name),
    key: parse(r.wire_key_json) as Record<string, string>,
    reason: r.reason as ConflictReason,
    localOp: r.local_op as ConflictRecord['localOp'],
    localPayload: parse(r.local_payload) as Record<string, unknown> | null,
    baseRowVersion: Number(r.base_row_version),
    serverRowVersion: Number(r.server_row_version),
    serverRowDeleted: Number(r.server_row_deleted) !== 0,
    serverRow: parse(r.server_row) as Record<string, unknown> | null,
    resolution: r.resolution as ConflictRecord['resolution'],
    rule: r.rule as ConflictRule,
    localLost: Number(r.local_lost) !== 0,
    details: (parse(r.details) ?? {}) as Record<string, unknown>,
    at: String(r.created_at),
  };
}
