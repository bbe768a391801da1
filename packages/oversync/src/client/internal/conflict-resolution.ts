/**
 * Conflict resolution: a push conflict names one row; the resolver decides (accept the server,
 * keep local, or merge), the plan is applied with every other frozen row going back to dirty, and
 * the outcome is written to the conflict log in the same transaction. A `foreign_key` conflict
 * whose parent is gone can be kept by re-creating the parent from its last local payload.
 */
import { canonicalJson } from '../../shared/canonical-json.js';
import type { pushConflictDetailsSchema } from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import type {
  ConflictContext,
  ConflictReason,
  ConflictRecord,
  ConflictReference,
  ConflictResolution,
  ConflictRule,
} from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { type LocalPayload, wireKeyToLocal, wirePayloadToLocal } from './codec.js';
import { readConflict, recordConflict } from './conflict-log.js';
import {
  beginApply,
  clearOutbox,
  deletedParentPayload,
  endApply,
  forgetDeletedParent,
  moveDirtyToFront,
  outboxRowByWireKey,
  readFrozenRows,
  requeueDirty,
} from './local-store.js';
import type { SyncContext } from './sync-context.js';
import type { TableModel } from './table-model.js';
import type { TableOps } from './table-ops.js';

export type PushConflictDetails = ReturnType<typeof pushConflictDetailsSchema.parse>;

export async function resolveConflict(
  ctx: SyncContext,
  details: PushConflictDetails,
  signal?: AbortSignal,
): Promise<void> {
  const schema = ctx.cfg.schema;
  const ops = ctx.checkRow(details.schema, details.table);
  const wireKeyJson = canonicalJson(details.key);
  const u = await ctx.runner.read((db) => outboxRowByWireKey(db, details.table, wireKeyJson), signal);
  if (!u) {
    throw new ClientError(
      'OVERSYNC_CLIENT_PUSH_CONFLICT',
      'push conflict names a row that is not in the outbox',
      {
        details: { table: details.table, key: details.key },
      },
    );
  }
  const reason: ConflictReason = details.reason ?? 'row_version';
  const serverLive =
    details.server_row !== null && details.server_row !== undefined && !details.server_row_deleted;
  const serverRowLocal = serverLive ? wirePayloadToLocal(ops.m, details.server_row) : null;
  const ref = details.references ? await reference(ctx, details.references, signal) : undefined;
  const conflict: ConflictContext = {
    reason,
    ...(details.constraint !== undefined ? { constraint: details.constraint } : {}),
    ...(details.column !== undefined ? { column: details.column } : {}),
    ...(ref ? { references: ref.context } : {}),
    schema,
    table: details.table,
    key: details.key as Record<string, string>,
    localOp: u.op as ConflictContext['localOp'],
    localPayload: u.local_payload === null ? null : (JSON.parse(u.local_payload) as Record<string, unknown>),
    baseRowVersion: Number(u.base_row_version),
    serverRowVersion: details.server_row_version,
    serverRowDeleted: details.server_row_deleted,
    serverRow: serverLive ? (details.server_row as Record<string, unknown>) : null,
    serverRowLocal,
  };
  let resolution: ConflictResolution | undefined;
  let invalid: string | undefined;
  try {
    resolution = await ctx.cfg.resolver(conflict);
  } catch (err) {
    invalid = `resolver threw: ${err instanceof Error ? err.message : String(err)}`;
  }
  if (!invalid) invalid = validateResolution(ops.m, resolution);
  const v = details.server_row_version;
  let record: ConflictRecord | undefined;
  await ctx.runner.tx((db) => {
    beginApply(db, ctx.fk, schema);
    // Every frozen row goes back to dirty; a newer dirty row for the same key is kept.
    const all = readFrozenRows(db);
    for (const r of all) {
      if (!invalid && r.key_json === u.key_json && r.table_name === details.table) continue;
      requeueDirty(db, schema, r.table_name, r.key_json, r.local_payload, Number(r.base_row_version), false);
    }
    clearOutbox(db);
    if (!invalid && resolution) {
      const key = wireKeyToLocal(ops.m, details.key);
      const newer = ops.dirty(db, key.text);
      let kind: ConflictResolution['kind'] = resolution.kind;
      let rule: ConflictRule = 'resolver';
      if (newer) {
        kind = 'keep-local';
        rule = 'newer-local-edit';
      } else if (kind === 'keep-local' && reason !== 'row_version') {
        // Keeping the local data can only succeed for a child whose parent comes back.
        if (reason !== 'foreign_key' || u.op === 'DELETE') {
          kind = 'accept-server';
          rule = 'keep-local-not-applicable';
        } else if (ref?.payload && recreateParent(ctx, db, ref)) {
          rule = 'parent-recreated';
        } else {
          kind = 'accept-server';
          rule = 'parent-unavailable';
        }
      }
      if (kind === 'accept-server') {
        if (serverLive) {
          ops.upsertWire(db, details.server_row);
          ops.setRowState(db, key.text, v, false);
        } else {
          ops.delete(db, key.bind);
          if (v === 0) ops.deleteRowState(db, key.text);
          else ops.setRowState(db, key.text, v, true);
        }
      } else {
        if (kind === 'merged' && resolution.kind === 'merged') {
          ops.upsertLocal(db, resolution.payload as LocalPayload);
        }
        if (v === 0) ops.deleteRowState(db, key.text);
        else ops.setRowState(db, key.text, v, !serverLive);
        const keyJson = ops.keyJson(db, key.text);
        let live = ops.localRow(db, key.bind, keyJson);
        if (!live && !newer && kind === 'keep-local' && u.local_payload !== null) {
          // The row was removed locally by an apply since the freeze: keeping the local
          // side means writing the frozen intent back, never pushing a delete nobody made.
          // With a newer local edit the row is gone because the app deleted it: that delete is
          // the intent to keep (re-queued below on top of the server's version).
          live = JSON.parse(u.local_payload) as LocalPayload;
          ops.upsertLocal(db, live);
        }
        if (live) requeueDirty(db, schema, details.table, keyJson, JSON.stringify(live), v, true);
        else if (serverLive) requeueDirty(db, schema, details.table, keyJson, null, v, true);
        else ops.deleteDirty(db, key.text);
      }
      const id = recordConflict(db, {
        schema,
        table: details.table,
        keyJson: u.key_json,
        wireKey: details.key as Record<string, string>,
        reason,
        localOp: u.op,
        localPayload: u.local_payload,
        baseRowVersion: Number(u.base_row_version),
        serverRowVersion: v,
        serverRowDeleted: details.server_row_deleted,
        serverRow: serverLive ? details.server_row : null,
        resolution: kind,
        rule,
        localLost: kind === 'accept-server',
        details: {
          ...(details.constraint !== undefined ? { constraint: details.constraint } : {}),
          ...(details.column !== undefined ? { column: details.column } : {}),
          ...(ref ? { references: ref.context } : {}),
        },
      });
      record = readConflict(db, id);
    }
    endApply(db);
  }, signal);
  if (invalid || !resolution || !record) {
    throw new ClientError('OVERSYNC_CLIENT_INVALID_CONFLICT_RESOLUTION', invalid ?? 'no resolution', {
      details: { table: details.table, key: details.key },
    });
  }
  ctx.hooks.conflict(conflict, resolution, record);
  ctx.hooks.applied({ kind: 'conflict', tables: [details.table], rows: 1, lastBundleSeqSeen: -1 });
}

/** The parent a `foreign_key` conflict names, and its last local payload if the device has one. */
async function reference(
  ctx: SyncContext,
  r: NonNullable<PushConflictDetails['references']>,
  signal?: AbortSignal,
): Promise<{ context: ConflictReference; ops?: TableOps; payload?: LocalPayload } | undefined> {
  const pops = ctx.ops.get(r.table);
  const base = {
    table: r.table,
    key: r.key as Record<string, string>,
    rowVersion: r.row_version,
    deleted: r.deleted,
  };
  if (!pops || r.schema !== ctx.cfg.schema) return { context: { ...base, recoverable: false } };
  const payload = await ctx.runner.read((db) => {
    const key = wireKeyToLocal(pops.m, r.key);
    const keyJson = pops.keyJson(db, key.text);
    const saved = deletedParentPayload(db, ctx.cfg.schema, r.table, keyJson);
    return pops.localRow(db, key.bind, keyJson) ?? (saved ? (JSON.parse(saved) as LocalPayload) : undefined);
  }, signal);
  return {
    context: { ...base, recoverable: payload !== undefined },
    ops: pops,
    ...(payload ? { payload } : {}),
  };
}

/**
 * Keep-local of a child whose parent is gone on the server: the parent is written back from its
 * last local payload and queued as a re-INSERT (on top of the server's tombstone), ahead of
 * every other intent so it reaches the server before its children.
 */
function recreateParent(
  ctx: SyncContext,
  db: SqliteDb,
  ref: { context: ConflictReference; ops?: TableOps; payload?: LocalPayload },
): boolean {
  const pops = ref.ops;
  if (!pops || !ref.payload) return false;
  const schema = ctx.cfg.schema;
  const key = wireKeyToLocal(pops.m, ref.context.key);
  const keyJson = pops.keyJson(db, key.text);
  pops.upsertLocal(db, ref.payload);
  const v = ref.context.rowVersion;
  if (v > 0) pops.setRowState(db, key.text, v, true);
  else pops.deleteRowState(db, key.text);
  requeueDirty(db, schema, pops.m.table, keyJson, JSON.stringify(ref.payload), v, true);
  moveDirtyToFront(db, schema, pops.m.table, keyJson);
  forgetDeletedParent(db, schema, pops.m.table, keyJson);
  return true;
}
function validateResolution(m: TableModel, r: ConflictResolution | undefined): string | undefined {
  if (!r || typeof r !== 'object') return 'resolver returned no resolution';
  if (r.kind === 'accept-server' || r.kind === 'keep-local') return undefined;
  if (r.kind !== 'merged') return `unknown resolution kind ${String((r as { kind?: unknown }).kind)}`;
  const p = r.payload;
  if (!p || typeof p !== 'object' || Array.isArray(p)) return 'merged payload must be an object';
  const keys = Object.keys(p);
  const cols = m.columns.map((c) => c.key);
  if (keys.length !== cols.length || !cols.every((c) => c in p)) {
    return `merged payload must hold exactly the columns of ${m.table}`;
  }
  for (const k of m.keyColumns) {
    if (p[k.key] === undefined) return 'merged payload lacks the key';
  }
  return undefined;
}
