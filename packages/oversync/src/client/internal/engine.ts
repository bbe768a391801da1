import { randomUUID } from 'node:crypto';
import { computeBundleHash } from '../../shared/bundle-hash.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import {
  type BundleRow,
  committedBundleRowsResponseSchema,
  pullResponseSchema,
  pushConflictDetailsSchema,
  pushSessionChunkResponseSchema,
  pushSessionCommitResponseSchema,
  pushSessionCreateResponseSchema,
  snapshotChunkResponseSchema,
  snapshotSessionSchema,
} from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import type {
  AppliedEvent,
  ConflictContext,
  ConflictReason,
  ConflictRecord,
  ConflictReference,
  ConflictResolution,
  ConflictResolver,
  ConflictRule,
  ProgressEvent,
  ProgressPhase,
  PullReport,
  PushReport,
  RebuildReport,
} from '../types.js';
import {
  type LocalPayload,
  localKeyToWire,
  localPayloadToWire,
  replayEquivalent,
  wireKeyToLocal,
  wirePayloadToLocal,
} from './codec.js';
import { readConflict, recordConflict } from './conflict-log.js';
import {
  beginApply,
  clearOutbox,
  endApply,
  ensureSourceRow,
  nextSourceBundleId,
  protocolError,
  raiseSourceFloor,
  readAttachment,
  readOperation,
  readOutbox,
  requeueDirty,
  setOperation,
  stmt,
  TableOps,
  trackForeignKeys,
} from './db-ops.js';
import { ForeignKeyIndex } from './foreign-keys.js';
import { quoteIdent, sqlString } from './local-schema.js';
import { keyJsonFromParams, type TableModel } from './table-model.js';
import { type Logger, serverCodeOf, type Transport } from './transport.js';
import type { SqliteDb, TxRunner } from './writer.js';

export interface EngineConfig {
  readonly schema: string;
  readonly uploadLimit: number;
  readonly downloadLimit: number;
  readonly snapshotChunkRows: number;
  readonly maxConflictRetries: number;
  readonly maxUnstructuredConflicts: number;
  readonly resolver: ConflictResolver;
}

export interface EngineHooks {
  progress(e: ProgressEvent): void;
  applied(e: AppliedEvent): void;
  conflict(context: ConflictContext, resolution: ConflictResolution, record: ConflictRecord): void;
  /** Called when the in-memory source id changes after a committed rotation. */
  sourceChanged(sourceId: string): void;
  /** Called when the durable binding was reset (seed lease lost). */
  bindingReset(): void;
}

interface OutboxRow {
  ordinal: number;
  table: string;
  keyJson: string;
  wireKeyJson: string;
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  base: number;
  localPayload: string | null;
  wirePayload: string | null;
}

interface CommittedMeta {
  needsProof?: boolean;
  bundleSeq: number;
  sourceId: string;
  sourceBundleId: number;
  rowCount: number;
  bundleHash: string;
}

export type PreserveMode = 'none' | 'keep-base' | 'rebase';

export interface RebuildPlan {
  phase: ProgressPhase;
  /** Rotate to this source id (source recovery). */
  rotateTo?: { newSourceId: string; reason: string };
  /** What happens to local intents (dirty rows and an uncommitted outbox). */
  preserve: PreserveMode;
  /** The outbox is committed remotely: drop it instead of preserving it. */
  dropCommittedOutbox?: boolean;
  advanceSourceFloor?: number;
  clearOperation?: boolean;
  /** Bind this user as attached during the apply (remote replace). */
  bindUser?: string;
}

const OPS = new Set(['INSERT', 'UPDATE', 'DELETE']);

type PushConflictDetails = ReturnType<typeof pushConflictDetailsSchema.parse>;

/** Push, replay, pull, rebuild and conflict handling over one local database. */
export class SyncEngine {
  readonly runner: TxRunner;
  readonly transport: Transport;
  readonly cfg: EngineConfig;
  readonly models: readonly TableModel[];
  readonly ops: ReadonlyMap<string, TableOps>;
  readonly #fk: ForeignKeyIndex;
  readonly #hooks: EngineHooks;
  readonly #logger: Logger;

  constructor(
    runner: TxRunner,
    transport: Transport,
    cfg: EngineConfig,
    models: readonly TableModel[],
    hooks: EngineHooks,
    logger: Logger,
  ) {
    this.runner = runner;
    this.transport = transport;
    this.cfg = cfg;
    this.models = models;
    this.ops = new Map(models.map((m) => [m.table, new TableOps(m, cfg.schema)]));
    this.#fk = new ForeignKeyIndex(models);
    this.#hooks = hooks;
    this.#logger = logger;
  }

  tableOps(table: string): TableOps {
    const o = this.ops.get(table);
    if (!o) throw protocolError(`table ${table} is not managed by this client`, { table });
    return o;
  }

  #checkRow(schema: string, table: string): TableOps {
    if (schema !== this.cfg.schema) {
      throw protocolError(`row schema ${schema} differs from the configured schema ${this.cfg.schema}`);
    }
    return this.tableOps(table);
  }

  // -------------------------------------------------------------------------------------------
  // Push
  // -------------------------------------------------------------------------------------------

  /** Freezes dirty rows into the outbox (or returns the outbox already frozen). */
  async freeze(signal?: AbortSignal): Promise<{ outbox: ReturnType<typeof readOutbox>; resumed: boolean }> {
    const schema = this.cfg.schema;
    return this.runner.tx((db) => {
      const cur = readOutbox(db);
      if (cur.state !== 'none') return { outbox: cur, resumed: true };
      const att = readAttachment(db);
      const dirty = stmt(
        db,
        `SELECT d.table_name, d.key_json, d.base_row_version, d.payload, d.dirty_ordinal, rs.deleted AS rs_deleted
         FROM _sync_dirty_rows d LEFT JOIN _sync_row_state rs
           ON rs.schema_name = d.schema_name AND rs.table_name = d.table_name AND rs.key_json = d.key_json
         WHERE d.schema_name = ? ORDER BY d.dirty_ordinal, d.table_name, d.key_json`,
      ).all(schema) as Array<{
        table_name: string;
        key_json: string;
        base_row_version: number;
        payload: string | null;
        dirty_ordinal: number;
        rs_deleted: number | null;
      }>;
      const upserts: Array<OutboxRow & { order: number; dirtyOrdinal: number }> = [];
      const deletes: Array<OutboxRow & { order: number; dirtyOrdinal: number }> = [];
      const delDirty = stmt(
        db,
        `DELETE FROM _sync_dirty_rows WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
      );
      for (const d of dirty) {
        const ops = this.ops.get(d.table_name);
        if (!ops) continue;
        const live = d.rs_deleted !== null && d.rs_deleted === 0;
        if (d.payload === null && !live) {
          delDirty.run(schema, d.table_name, d.key_json); // insert+delete before any upload: a no-op
          continue;
        }
        const op = d.payload !== null ? (live ? 'UPDATE' : 'INSERT') : 'DELETE';
        const wireKey = localKeyToWire(ops.m, JSON.parse(d.key_json) as Record<string, unknown>);
        const wirePayload =
          d.payload === null
            ? null
            : JSON.stringify(localPayloadToWire(ops.m, JSON.parse(d.payload) as LocalPayload));
        const row = {
          ordinal: 0,
          table: d.table_name,
          keyJson: d.key_json,
          wireKeyJson: canonicalJson(wireKey),
          op,
          base: Number(d.base_row_version),
          localPayload: d.payload,
          wirePayload,
          order: ops.m.order,
          dirtyOrdinal: Number(d.dirty_ordinal),
        } as const;
        (op === 'DELETE' ? deletes : upserts).push({ ...row });
      }
      upserts.sort((a, b) => a.order - b.order || a.dirtyOrdinal - b.dirtyOrdinal);
      deletes.sort((a, b) => b.order - a.order || a.dirtyOrdinal - b.dirtyOrdinal);
      const rows = [...upserts, ...deletes];
      if (rows.length === 0) return { outbox: cur, resumed: false };
      const sbid = nextSourceBundleId(db, att.currentSourceId);
      const ins = stmt(
        db,
        `INSERT INTO _sync_outbox_rows(source_bundle_id, row_ordinal, schema_name, table_name, key_json, wire_key_json,
           op, base_row_version, local_payload, wire_payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      rows.forEach((r, i) => {
        ins.run(
          sbid,
          i,
          schema,
          r.table,
          r.keyJson,
          r.wireKeyJson,
          r.op,
          r.base,
          r.localPayload,
          r.wirePayload,
        );
        delDirty.run(schema, r.table, r.keyJson);
      });
      stmt(
        db,
        `UPDATE _sync_outbox_bundle SET state = 'prepared', source_id = ?, source_bundle_id = ?, row_count = ?,
           initialization_id = ?, canonical_request_hash = '', remote_bundle_hash = '', remote_bundle_seq = 0,
           unstructured_conflicts = 0 WHERE singleton_key = 1`,
      ).run(att.currentSourceId, sbid, rows.length, att.pendingInitializationId);
      return { outbox: readOutbox(db), resumed: false };
    }, signal);
  }

  async #readOutboxRows(signal?: AbortSignal, from = 0, limit = -1): Promise<OutboxRow[]> {
    return this.runner.tx((db) => {
      const rs = stmt(
        db,
        `SELECT row_ordinal, table_name, key_json, wire_key_json, op, base_row_version, local_payload, wire_payload
         FROM _sync_outbox_rows WHERE row_ordinal >= ? ORDER BY row_ordinal LIMIT ?`,
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
    }, signal);
  }

  /**
   * Pushes at most one bundle (the resumed outbox or a new freeze), then replays the committed
   * result. A 409 names one conflicting row at a time: each is resolved and the push retried.
   * Retries are bounded per row: a row that conflicts again after `maxConflictRetries` automatic
   * retries ends the call (its intent stays queued). Each retry either resolves a row not seen
   * before or spends that row's budget, so the loop always ends.
   */
  async pushPending(signal?: AbortSignal): Promise<PushReport> {
    let conflictsResolved = 0;
    const perRow = new Map<string, number>();
    for (;;) {
      const { outbox } = await this.freeze(signal);
      if (outbox.state === 'none') return { outcome: 'no_change', conflictsResolved };
      try {
        const meta = await this.#uploadAndCommit(outbox, signal);
        const replayed = await this.#fetchAndReplay(meta, outbox, signal);
        return { outcome: 'committed', bundleSeq: meta.bundleSeq, rowCount: replayed, conflictsResolved };
      } catch (e) {
        const handled = await this.#handlePushError(e, outbox, signal);
        if (handled === 'committed') return { outcome: 'committed', conflictsResolved };
        if (handled === 'rethrow') throw e;
        conflictsResolved++;
        const seen = (perRow.get(handled.row) ?? 0) + 1;
        perRow.set(handled.row, seen);
        const remaining = await this.runner.tx(
          (db) => Number(stmt(db, `SELECT COUNT(*) FROM _sync_dirty_rows`).pluck().get()),
          signal,
        );
        if (remaining === 0) return { outcome: 'no_change', conflictsResolved };
        if (seen > this.cfg.maxConflictRetries) {
          throw new ClientError(
            'OVERSYNC_CLIENT_CONFLICT_RETRY_EXHAUSTED',
            `push conflicts on one row persisted after ${this.cfg.maxConflictRetries} automatic retries`,
            {
              details: {
                retryCount: this.cfg.maxConflictRetries,
                remainingDirtyCount: remaining,
                row: handled.row,
              },
            },
          );
        }
      }
    }
  }

  async #uploadAndCommit(
    outbox: ReturnType<typeof readOutbox>,
    signal?: AbortSignal,
  ): Promise<CommittedMeta> {
    if (outbox.state === 'committed_remote') {
      return {
        bundleSeq: outbox.remoteBundleSeq,
        sourceId: outbox.sourceId,
        sourceBundleId: outbox.sourceBundleId,
        rowCount: -1,
        bundleHash: outbox.remoteBundleHash,
      };
    }
    const t = this.transport;
    return t.withRetry(
      'push_pending',
      async () => {
        const body: Record<string, unknown> = {
          source_bundle_id: outbox.sourceBundleId,
          planned_row_count: outbox.rowCount,
        };
        if (outbox.initializationId) body.initialization_id = outbox.initializationId;
        const created = await t.request({
          method: 'POST',
          path: '/sync/push-sessions',
          body,
          schema: pushSessionCreateResponseSchema,
          ...(signal ? { signal } : {}),
        });
        if (created.status === 'already_committed') {
          const meta = {
            bundleSeq: created.bundle_seq ?? 0,
            sourceId: created.source_id ?? '',
            sourceBundleId: created.source_bundle_id ?? 0,
            rowCount: created.row_count ?? 0,
            bundleHash: created.bundle_hash ?? '',
          };
          if (
            meta.sourceId !== outbox.sourceId ||
            meta.sourceBundleId !== outbox.sourceBundleId ||
            meta.bundleSeq <= 0 ||
            !meta.bundleHash
          ) {
            throw protocolError('already_committed answer does not match the frozen outbox', { ...meta });
          }
          // Not marked committed yet: the committed rows must first prove they carry our intents.
          return { ...meta, needsProof: true };
        }
        const pushId = created.push_id;
        if (
          !pushId ||
          created.planned_row_count !== outbox.rowCount ||
          (created.next_expected_row_ordinal ?? 0) !== 0
        ) {
          throw protocolError('push session create answer does not echo the plan');
        }
        let committed = false;
        try {
          for (let start = 0; start < outbox.rowCount; start += this.cfg.uploadLimit) {
            const rows = await this.#readOutboxRows(signal, start, this.cfg.uploadLimit);
            const wireRows = rows.map((r) => {
              const w: Record<string, unknown> = {
                schema: this.cfg.schema,
                table: r.table,
                key: JSON.parse(r.wireKeyJson) as unknown,
                op: r.op,
                base_row_version: r.base,
              };
              if (r.wirePayload !== null) w.payload = JSON.parse(r.wirePayload) as unknown;
              return w;
            });
            const res: { push_id: string; next_expected_row_ordinal: number } = await t.request({
              method: 'POST',
              path: `/sync/push-sessions/${encodeURIComponent(pushId)}/chunks`,
              body: { start_row_ordinal: start, rows: wireRows },
              schema: pushSessionChunkResponseSchema,
              ...(signal ? { signal } : {}),
            });
            if (res.push_id !== pushId || res.next_expected_row_ordinal !== start + rows.length) {
              throw protocolError('push chunk answer does not echo the session');
            }
            this.#hooks.progress({ phase: 'push', done: start + rows.length, total: outbox.rowCount });
          }
          const c = await t.request({
            method: 'POST',
            path: `/sync/push-sessions/${encodeURIComponent(pushId)}/commit`,
            schema: pushSessionCommitResponseSchema,
            ...(signal ? { signal } : {}),
          });
          committed = true;
          if (
            c.source_id !== outbox.sourceId ||
            c.source_bundle_id !== outbox.sourceBundleId ||
            c.row_count <= 0
          ) {
            throw protocolError('push commit answer does not match the frozen outbox');
          }
          const meta = {
            bundleSeq: c.bundle_seq,
            sourceId: c.source_id,
            sourceBundleId: c.source_bundle_id,
            rowCount: c.row_count,
            bundleHash: c.bundle_hash,
          };
          await this.#markCommitted(meta, signal);
          return meta;
        } finally {
          if (!committed) {
            t.request({ method: 'DELETE', path: `/sync/push-sessions/${encodeURIComponent(pushId)}` }).catch(
              () => undefined,
            );
          }
        }
      },
      signal,
    );
  }

  async #markCommitted(meta: CommittedMeta, signal?: AbortSignal): Promise<void> {
    await this.runner.tx((db) => {
      stmt(
        db,
        `UPDATE _sync_outbox_bundle SET state = 'committed_remote', remote_bundle_seq = ?, remote_bundle_hash = ?
         WHERE singleton_key = 1`,
      ).run(meta.bundleSeq, meta.bundleHash);
      stmt(
        db,
        `UPDATE _sync_attachment_state SET pending_initialization_id = '' WHERE singleton_key = 1`,
      ).run();
    }, signal);
  }

  /** Fetches the committed rows of our bundle, verifies count and hash, and replays them. */
  async #fetchAndReplay(
    meta: CommittedMeta,
    outbox: ReturnType<typeof readOutbox>,
    signal?: AbortSignal,
  ): Promise<number> {
    const rows: BundleRow[] = [];
    let after = -1;
    let expectedCount = meta.rowCount;
    for (;;) {
      const page = await this.transport.request({
        method: 'GET',
        path: `/sync/committed-bundles/${meta.bundleSeq}/rows`,
        query: { max_rows: this.cfg.downloadLimit, after_row_ordinal: after >= 0 ? after : undefined },
        schema: committedBundleRowsResponseSchema,
        retryOp: 'committed_bundle_fetch',
        ...(signal ? { signal } : {}),
      });
      const pr = page.rows ?? [];
      if (
        page.bundle_seq !== meta.bundleSeq ||
        page.source_id !== outbox.sourceId ||
        page.source_bundle_id !== outbox.sourceBundleId ||
        page.bundle_hash !== meta.bundleHash ||
        (expectedCount >= 0 && page.row_count !== expectedCount)
      ) {
        throw protocolError('committed bundle page metadata does not match the commit');
      }
      expectedCount = page.row_count;
      if (pr.length > 0 && page.next_row_ordinal !== after + pr.length) {
        throw protocolError('committed bundle page has a wrong next_row_ordinal');
      }
      if (page.has_more && pr.length === 0)
        throw protocolError('committed bundle page: has_more without rows');
      for (const r of pr) {
        if (r.row_version <= 0 || !OPS.has(r.op) || (r.op !== 'DELETE' && r.payload === undefined)) {
          throw protocolError('committed bundle row is malformed');
        }
        rows.push(r);
      }
      after += pr.length;
      if (!page.has_more) break;
    }
    if (rows.length !== expectedCount) {
      throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'committed bundle row count does not match', {
        details: { expected: expectedCount, got: rows.length },
      });
    }
    const hash = computeBundleHash(rows).hex;
    if (hash !== meta.bundleHash) {
      throw new ClientError('OVERSYNC_CLIENT_HASH_MISMATCH', 'staged committed bundle hash does not match', {
        details: { expected: meta.bundleHash, computed: hash, bundleSeq: meta.bundleSeq },
      });
    }
    await this.#replay(meta, rows, signal);
    return rows.length;
  }

  async #replay(meta: CommittedMeta, rows: readonly BundleRow[], signal?: AbortSignal): Promise<void> {
    const schema = this.cfg.schema;
    const tables = new Set<string>();
    let lastSeen = 0;
    await this.runner.tx((db) => {
      const outboxRows = stmt(
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
      const byKey = new Map(outboxRows.map((r) => [`${r.table_name}\u0000${r.wire_key_json}`, r]));
      if (meta.needsProof) {
        // `already_committed`: prove the committed bundle carries the frozen intents (same table,
        // key and op; extra server-side rows allowed, and an upsert the server's own cascade
        // removed in the same commit may be missing or a DELETE). A different bundle under our
        // source tuple means this database was restored from an older copy: replace the source.
        const committed = new Map(rows.map((r) => [`${r.table}\u0000${canonicalJson(r.key)}`, r.op]));
        let exact = 0;
        for (const [k, r] of byKey) {
          const got = committed.get(k);
          if (got === r.op) exact++;
          if (got !== r.op && !(r.op !== 'DELETE' && (got === undefined || got === 'DELETE'))) {
            throw new ClientError(
              'OVERSYNC_CLIENT_PROTOCOL',
              'already committed bundle does not carry the frozen outbox',
              {
                details: { bundleSeq: meta.bundleSeq, reason: 'already_committed_mismatch' },
              },
            );
          }
        }
        if (exact === 0 && byKey.size > 0) {
          throw new ClientError(
            'OVERSYNC_CLIENT_PROTOCOL',
            'already committed bundle does not carry the frozen outbox',
            {
              details: { bundleSeq: meta.bundleSeq, reason: 'already_committed_mismatch' },
            },
          );
        }
      }
      beginApply(db, this.#fk, schema);
      const matched = new Set<string>();
      for (const c of rows) {
        const ops = this.#checkRow(c.schema, c.table);
        tables.add(c.table);
        const key = wireKeyToLocal(ops.m, c.key);
        const v = c.row_version;
        const uKey = `${c.table}\u0000${canonicalJson(c.key)}`;
        const u = byKey.get(uKey);
        if (u) matched.add(uKey);
        const rs = ops.rowState(db, key.text);
        if (rs && rs.version >= v) continue; // a newer version was applied already
        if (!u) {
          applyServerRow(db, ops, key, c);
          continue;
        }
        const d = ops.dirty(db, key.text);
        const keyJson = ops.keyJson(db, key.text);
        if (u.op !== 'DELETE' && c.op === 'DELETE') {
          // The server's own cascade (of another row of this bundle) removed the row we wrote.
          if (d)
            ops.setRowState(db, key.text, v, true); // edited since the freeze: pushed again
          else {
            this.#recordServerCascade(db, ops, u, v);
            applyServerRow(db, ops, key, c);
          }
          continue;
        }
        // A row waiting in the stash for its parent is still the device's row.
        const live = ops.localRow(db, key.bind, keyJson);
        if (u.op === 'DELETE') {
          if (live) {
            ops.setRowState(db, key.text, v, true);
            requeueDirty(db, schema, c.table, keyJson, JSON.stringify(live), v, true);
          } else {
            applyServerRow(db, ops, key, c);
          }
          continue;
        }
        const localPayload = u.local_payload === null ? null : (JSON.parse(u.local_payload) as unknown);
        if (!live) {
          ops.setRowState(db, key.text, v, false);
          requeueDirty(db, schema, c.table, keyJson, null, v, true);
          continue;
        }
        const dirtyMatches =
          d !== undefined &&
          d.op === u.op &&
          d.payload !== null &&
          replayEquivalent(JSON.parse(d.payload) as unknown, localPayload);
        const liveMatches = replayEquivalent(live, localPayload);
        if ((d !== undefined && !dirtyMatches) || !liveMatches) {
          ops.setRowState(db, key.text, v, false);
          requeueDirty(db, schema, c.table, keyJson, JSON.stringify(live), v, true);
          continue;
        }
        applyServerRow(db, ops, key, c);
      }
      // An uploaded upsert with no committed row: the server inserted it and its own cascade
      // removed it again in the same commit (the net change is nothing). Follow the server.
      for (const [k, u] of byKey) {
        if (matched.has(k) || u.op === 'DELETE') continue;
        const ops = this.ops.get(u.table_name);
        if (!ops) continue;
        const key = wireKeyToLocal(ops.m, JSON.parse(u.wire_key_json) as Record<string, unknown>);
        if (ops.dirty(db, key.text)) continue; // edited since the freeze: pushed again
        this.#recordServerCascade(db, ops, u, meta.bundleSeq);
        ops.delete(db, key.bind);
      }
      const att = readAttachment(db);
      lastSeen = att.lastBundleSeqSeen;
      if (meta.bundleSeq === att.lastBundleSeqSeen + 1) {
        lastSeen = meta.bundleSeq;
        stmt(db, `UPDATE _sync_attachment_state SET last_bundle_seq_seen = ? WHERE singleton_key = 1`).run(
          meta.bundleSeq,
        );
      }
      raiseSourceFloor(db, meta.sourceId, meta.sourceBundleId + 1);
      clearOutbox(db);
      stmt(db, `DELETE FROM _sync_push_stage`).run();
      stmt(
        db,
        `UPDATE _sync_attachment_state SET pending_initialization_id = '' WHERE singleton_key = 1`,
      ).run();
      // Parents' last payloads are kept only while some local intent may need to re-create one.
      stmt(
        db,
        `DELETE FROM _sync_deleted_parents WHERE NOT EXISTS (SELECT 1 FROM _sync_dirty_rows WHERE payload IS NOT NULL)`,
      ).run();
      endApply(db);
    }, signal);
    this.#hooks.applied({
      kind: 'replay',
      tables: [...tables],
      rows: rows.length,
      lastBundleSeqSeen: lastSeen,
    });
  }

  /** Logs a pushed upsert that the server's cascade removed in the same commit (local edit lost). */
  #recordServerCascade(
    db: SqliteDb,
    ops: TableOps,
    u: {
      key_json: string;
      wire_key_json: string;
      op: string;
      base_row_version: number;
      local_payload: string | null;
    },
    version: number,
  ): void {
    recordConflict(db, {
      schema: this.cfg.schema,
      table: ops.m.table,
      keyJson: u.key_json,
      wireKey: JSON.parse(u.wire_key_json) as Record<string, string>,
      reason: 'deleted_by_cascade',
      localOp: u.op,
      localPayload: u.local_payload,
      baseRowVersion: Number(u.base_row_version),
      serverRowVersion: version,
      serverRowDeleted: true,
      serverRow: null,
      resolution: 'accept-server',
      rule: 'server-cascade',
      localLost: true,
    });
  }

  /** Maps push failures: conflicts, source sequencing, pruned history, lost seed leases. */
  async #handlePushError(
    e: unknown,
    outbox: ReturnType<typeof readOutbox>,
    signal?: AbortSignal,
  ): Promise<{ row: string } | 'committed' | 'rethrow'> {
    const cause = e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' ? e.cause : e;
    if (cause instanceof ClientError && cause.details.reason === 'already_committed_mismatch') {
      await this.enterSourceRecovery('source_sequence_changed', '', signal);
      throw recoveryError('source_sequence_changed', cause);
    }
    const code = serverCodeOf(cause);
    if (!code) return 'rethrow';
    const body = ((cause as ClientError).details.body ?? {}) as Record<string, unknown>;
    switch (code) {
      case 'push_conflict':
      case 'push_row_invalid': {
        const parsed = pushConflictDetailsSchema.safeParse(body.conflict);
        if (!parsed.success) {
          if (code === 'push_row_invalid') return 'rethrow';
          await this.#unstructuredConflict(outbox, cause as ClientError, signal);
          return 'rethrow';
        }
        const details =
          code === 'push_row_invalid' && !parsed.data.reason
            ? { ...parsed.data, reason: 'invalid_value' as const }
            : parsed.data;
        await this.#resolveConflict(details, signal);
        return { row: `${parsed.data.table}:${canonicalJson(parsed.data.key)}` };
      }
      case 'history_pruned': {
        const fresh = await this.runner.tx((db) => readOutbox(db), signal);
        if (fresh.state === 'committed_remote' || statusIsFetch(cause)) {
          // Our bundle is committed but no longer retained: rebuild from a snapshot (which holds
          // it), keep the local edits made since the freeze, and move the source floor past it.
          await this.rebuild(
            {
              phase: 'recover',
              preserve: 'rebase',
              dropCommittedOutbox: true,
              advanceSourceFloor: fresh.sourceBundleId + 1,
            },
            signal,
          );
          return 'committed';
        }
        await this.enterSourceRecovery('history_pruned', '', signal);
        throw recoveryError('history_pruned', cause);
      }
      case 'source_sequence_out_of_order':
      case 'source_sequence_changed':
        await this.enterSourceRecovery(code, '', signal);
        throw recoveryError(code, cause);
      case 'source_retired':
        await this.enterSourceRecovery(
          'source_retired',
          typeof body.replaced_by_source_id === 'string' ? body.replaced_by_source_id : '',
          signal,
        );
        throw recoveryError('source_retired', cause);
      case 'initialization_expired':
      case 'initialization_stale':
        await this.runner.tx((db) => {
          stmt(
            db,
            `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '',
               pending_initialization_id = '' WHERE singleton_key = 1`,
          ).run();
          stmt(db, `UPDATE _sync_outbox_bundle SET initialization_id = '' WHERE singleton_key = 1`).run();
        }, signal);
        this.#hooks.bindingReset();
        throw new ClientError(
          'OVERSYNC_CLIENT_RECONNECT_REQUIRED',
          `seed lease lost (${code}): reconnect required`,
          {
            cause,
            details: { serverCode: code },
          },
        );
      default:
        return 'rethrow';
    }
  }

  async enterSourceRecovery(reason: string, replacement: string, signal?: AbortSignal): Promise<void> {
    await this.runner.tx((db) => {
      const op = readOperation(db);
      const reserved = op.kind === 'source_recovery' ? op.replacementSourceId : '';
      stmt(db, `UPDATE _sync_attachment_state SET rebuild_required = 1 WHERE singleton_key = 1`).run();
      setOperation(db, {
        kind: 'source_recovery',
        reason,
        replacementSourceId: replacement || reserved,
      });
    }, signal);
  }

  /**
   * A 409 push_conflict without details cannot be resolved row by row. The reference client
   * retries the same frozen bundle forever; here the outbox is kept for a bounded number of
   * attempts, after which the intents are rebased onto a fresh snapshot (local edits win) so
   * the next push can make progress. Nothing local is lost either way.
   */
  async #unstructuredConflict(
    outbox: ReturnType<typeof readOutbox>,
    cause: ClientError,
    signal?: AbortSignal,
  ): Promise<void> {
    const count = await this.runner.tx((db) => {
      stmt(
        db,
        `UPDATE _sync_outbox_bundle SET unstructured_conflicts = unstructured_conflicts + 1 WHERE singleton_key = 1`,
      ).run();
      return readOutbox(db).unstructuredConflicts;
    }, signal);
    if (count < this.cfg.maxUnstructuredConflicts) {
      throw new ClientError('OVERSYNC_CLIENT_PUSH_CONFLICT', 'push conflict without details', {
        cause,
        details: { attempts: count, sourceBundleId: outbox.sourceBundleId },
      });
    }
    this.#logger.warn?.(
      { attempts: count },
      'oversync client: rebasing local intents after repeated opaque conflicts',
    );
    await this.rebuild({ phase: 'recover', preserve: 'rebase' }, signal);
    throw new ClientError(
      'OVERSYNC_CLIENT_PUSH_CONFLICT',
      'push conflict without details; local intents were rebased onto a fresh snapshot',
      { cause, details: { attempts: count, rebased: true } },
    );
  }

  async #resolveConflict(details: PushConflictDetails, signal?: AbortSignal): Promise<void> {
    const schema = this.cfg.schema;
    const ops = this.#checkRow(details.schema, details.table);
    const wireKeyJson = canonicalJson(details.key);
    const u = await this.runner.tx(
      (db) =>
        stmt(
          db,
          `SELECT key_json, op, base_row_version, local_payload FROM _sync_outbox_rows WHERE table_name = ? AND wire_key_json = ?`,
        ).get(details.table, wireKeyJson) as
          | { key_json: string; op: string; base_row_version: number; local_payload: string | null }
          | undefined,
      signal,
    );
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
    const ref = details.references ? await this.#reference(details.references, signal) : undefined;
    const ctx: ConflictContext = {
      reason,
      ...(details.constraint !== undefined ? { constraint: details.constraint } : {}),
      ...(details.column !== undefined ? { column: details.column } : {}),
      ...(ref ? { references: ref.context } : {}),
      schema,
      table: details.table,
      key: details.key as Record<string, string>,
      localOp: u.op as ConflictContext['localOp'],
      localPayload:
        u.local_payload === null ? null : (JSON.parse(u.local_payload) as Record<string, unknown>),
      baseRowVersion: Number(u.base_row_version),
      serverRowVersion: details.server_row_version,
      serverRowDeleted: details.server_row_deleted,
      serverRow: serverLive ? (details.server_row as Record<string, unknown>) : null,
      serverRowLocal,
    };
    let resolution: ConflictResolution | undefined;
    let invalid: string | undefined;
    try {
      resolution = await this.cfg.resolver(ctx);
    } catch (err) {
      invalid = `resolver threw: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (!invalid) invalid = validateResolution(ops.m, resolution);
    const v = details.server_row_version;
    let record: ConflictRecord | undefined;
    await this.runner.tx((db) => {
      beginApply(db, this.#fk, schema);
      // Every frozen row goes back to dirty; a newer dirty row for the same key is kept.
      const all = stmt(
        db,
        `SELECT table_name, key_json, base_row_version, local_payload FROM _sync_outbox_rows`,
      ).all() as Array<{
        table_name: string;
        key_json: string;
        base_row_version: number;
        local_payload: string | null;
      }>;
      for (const r of all) {
        if (!invalid && r.key_json === u.key_json && r.table_name === details.table) continue;
        requeueDirty(
          db,
          schema,
          r.table_name,
          r.key_json,
          r.local_payload,
          Number(r.base_row_version),
          false,
        );
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
          } else if (ref?.payload && this.#recreateParent(db, ref)) {
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
          if (!live && kind === 'keep-local' && u.local_payload !== null) {
            // The row was removed locally by an apply since the freeze: keeping the local
            // side means writing the frozen intent back, never pushing a delete nobody made.
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
    this.#hooks.conflict(ctx, resolution, record);
    this.#hooks.applied({ kind: 'conflict', tables: [details.table], rows: 1, lastBundleSeqSeen: -1 });
  }

  /** The parent a `foreign_key` conflict names, and its last local payload if the device has one. */
  async #reference(
    r: NonNullable<PushConflictDetails['references']>,
    signal?: AbortSignal,
  ): Promise<{ context: ConflictReference; ops?: TableOps; payload?: LocalPayload } | undefined> {
    const pops = this.ops.get(r.table);
    const base = {
      table: r.table,
      key: r.key as Record<string, string>,
      rowVersion: r.row_version,
      deleted: r.deleted,
    };
    if (!pops || r.schema !== this.cfg.schema) return { context: { ...base, recoverable: false } };
    const payload = await this.runner.tx((db) => {
      const key = wireKeyToLocal(pops.m, r.key);
      const keyJson = pops.keyJson(db, key.text);
      const saved = stmt(
        db,
        `SELECT payload FROM _sync_deleted_parents WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
      )
        .pluck()
        .get(this.cfg.schema, r.table, keyJson) as string | undefined;
      return (
        pops.localRow(db, key.bind, keyJson) ?? (saved ? (JSON.parse(saved) as LocalPayload) : undefined)
      );
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
  #recreateParent(
    db: SqliteDb,
    ref: { context: ConflictReference; ops?: TableOps; payload?: LocalPayload },
  ): boolean {
    const pops = ref.ops;
    if (!pops || !ref.payload) return false;
    const schema = this.cfg.schema;
    const key = wireKeyToLocal(pops.m, ref.context.key);
    const keyJson = pops.keyJson(db, key.text);
    pops.upsertLocal(db, ref.payload);
    const v = ref.context.rowVersion;
    if (v > 0) pops.setRowState(db, key.text, v, true);
    else pops.deleteRowState(db, key.text);
    requeueDirty(db, schema, pops.m.table, keyJson, JSON.stringify(ref.payload), v, true);
    stmt(
      db,
      `UPDATE _sync_dirty_rows SET dirty_ordinal = (SELECT MIN(dirty_ordinal) FROM _sync_dirty_rows) - 1
       WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
    ).run(schema, pops.m.table, keyJson);
    stmt(
      db,
      `DELETE FROM _sync_deleted_parents WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
    ).run(schema, pops.m.table, keyJson);
    return true;
  }

  // -------------------------------------------------------------------------------------------
  // Pull
  // -------------------------------------------------------------------------------------------

  async pullToStable(signal?: AbortSignal): Promise<PullReport> {
    let after = await this.runner.tx((db) => readAttachment(db).lastBundleSeqSeen, signal);
    let stable: number | undefined;
    let bundlesApplied = 0;
    let rowsApplied = 0;
    // Rows done / rows of the pages fetched so far (the server does not announce a pull's total).
    let rowsSeen = 0;
    let rowsDone = 0;
    for (;;) {
      let res: ReturnType<typeof pullResponseSchema.parse>;
      try {
        res = await this.transport.request({
          method: 'GET',
          path: '/sync/pull',
          query: { after_bundle_seq: after, max_bundles: this.cfg.downloadLimit, target_bundle_seq: stable },
          schema: pullResponseSchema,
          retryOp: 'pull_request',
          ...(signal ? { signal } : {}),
        });
      } catch (e) {
        const inner = e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' ? e.cause : e;
        if (serverCodeOf(inner) === 'history_pruned') {
          const r = await this.rebuild({ phase: 'recover', preserve: 'keep-base' }, signal);
          return {
            outcome: 'applied_snapshot',
            bundlesApplied,
            rowsApplied: rowsApplied + (r.restore?.rowCount ?? 0),
            lastBundleSeqSeen: r.restore?.bundleSeq ?? after,
            ...(r.restore ? { restore: r.restore } : {}),
          };
        }
        throw e;
      }
      const s = res.stable_bundle_seq;
      const bundles = res.bundles ?? [];
      if (s < 0 || s < after) throw protocolError('pull: stable_bundle_seq is behind the checkpoint');
      if (stable !== undefined && s !== stable)
        throw protocolError('pull: stable_bundle_seq changed between pages');
      if (bundles.length > 0 && s <= 0) throw protocolError('pull: bundles without a stable sequence');
      stable = s;
      let prev = after;
      for (const b of bundles) {
        if (b.bundle_seq <= prev || b.bundle_seq > s || !b.source_id || b.source_bundle_id <= 0) {
          throw protocolError('pull: bundle sequence out of order or malformed', { bundleSeq: b.bundle_seq });
        }
        prev = b.bundle_seq;
        for (const r of b.rows ?? []) {
          if (r.row_version <= 0 || !OPS.has(r.op) || (r.op !== 'DELETE' && r.payload === undefined)) {
            throw protocolError('pull: malformed bundle row', { bundleSeq: b.bundle_seq });
          }
        }
      }
      for (const b of bundles) rowsSeen += (b.rows ?? []).length;
      for (const b of bundles) {
        const n = await this.#applyBundle(b.bundle_seq, b.rows ?? [], signal);
        after = b.bundle_seq;
        bundlesApplied++;
        rowsApplied += n;
        rowsDone += (b.rows ?? []).length;
        this.#hooks.progress({ phase: 'pull', done: rowsDone, total: rowsSeen });
      }
      if (after >= s) break;
      if (!res.has_more) throw protocolError('pull ended early', { after, stable: s });
    }
    return {
      outcome: bundlesApplied > 0 ? 'applied_incremental' : 'already_at_target',
      bundlesApplied,
      rowsApplied,
      lastBundleSeqSeen: after,
    };
  }

  /** Applies one bundle in its own transaction; the checkpoint moves in the same transaction. */
  async #applyBundle(bundleSeq: number, rows: readonly BundleRow[], signal?: AbortSignal): Promise<number> {
    const tables = new Set<string>();
    let applied = 0;
    await this.runner.tx((db) => {
      beginApply(db, this.#fk, this.cfg.schema);
      for (const r of rows) {
        const ops = this.#checkRow(r.schema, r.table);
        const key = wireKeyToLocal(ops.m, r.key);
        const rs = ops.rowState(db, key.text);
        if (rs && rs.version >= r.row_version) continue;
        tables.add(r.table);
        applied++;
        if (ops.dirty(db, key.text)) {
          // A local edit is pending for this row: keep it (and its base version, so the push
          // detects the conflict and the resolver decides); record the server's version.
          ops.setRowState(db, key.text, r.row_version, r.op === 'DELETE');
          continue;
        }
        applyServerRow(db, ops, key, r);
      }
      stmt(
        db,
        `UPDATE _sync_attachment_state SET last_bundle_seq_seen = MAX(last_bundle_seq_seen, ?) WHERE singleton_key = 1`,
      ).run(bundleSeq);
      endApply(db);
    }, signal);
    this.#hooks.applied({ kind: 'pull', tables: [...tables], rows: applied, lastBundleSeqSeen: bundleSeq });
    return applied;
  }

  // -------------------------------------------------------------------------------------------
  // Snapshot rebuild
  // -------------------------------------------------------------------------------------------

  async rebuild(plan: RebuildPlan, signal?: AbortSignal): Promise<RebuildReport> {
    const schema = this.cfg.schema;
    await this.runner.tx((db) => {
      stmt(db, `UPDATE _sync_attachment_state SET rebuild_required = 1 WHERE singleton_key = 1`).run();
      stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
    }, signal);
    const t = this.transport;
    const body: Record<string, unknown> = {};
    if (plan.rotateTo) {
      body.source_replacement = {
        previous_source_id: t.sourceId,
        new_source_id: plan.rotateTo.newSourceId,
        reason: plan.rotateTo.reason,
      };
    }
    let session: ReturnType<typeof snapshotSessionSchema.parse>;
    try {
      session = await t.request({
        method: 'POST',
        path: '/sync/snapshot-sessions',
        ...(plan.rotateTo ? { body } : {}),
        schema: snapshotSessionSchema,
        retryOp: 'snapshot_session_create',
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      const inner = e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' ? e.cause : e;
      if (plan.rotateTo && serverCodeOf(inner) === 'source_retired') {
        throw new ClientError(
          'OVERSYNC_CLIENT_SOURCE_REPLACEMENT_DIVERGED',
          'server names a different replacement source',
          {
            cause: inner,
            details: { reserved: plan.rotateTo.newSourceId },
          },
        );
      }
      throw e;
    }
    if (
      session.snapshot_bundle_seq < 0 ||
      session.row_count < 0 ||
      (session.row_count > 0 && session.snapshot_bundle_seq <= 0) ||
      !session.expires_at
    ) {
      throw protocolError('snapshot session answer is malformed');
    }
    const sid = session.snapshot_id;
    try {
      let after = 0;
      this.#hooks.progress({ phase: plan.phase, done: 0, total: session.row_count });
      const fetchChunk = (from: number) =>
        t.request({
          method: 'GET',
          path: `/sync/snapshot-sessions/${encodeURIComponent(sid)}`,
          query: { after_row_ordinal: from, max_rows: this.cfg.snapshotChunkRows },
          schema: snapshotChunkResponseSchema,
          retryOp: 'snapshot_chunk_fetch',
          ...(signal ? { signal } : {}),
        });
      let pending = fetchChunk(0);
      for (;;) {
        const chunk = await pending;
        const rows = chunk.rows ?? [];
        if (
          chunk.snapshot_id !== sid ||
          chunk.snapshot_bundle_seq !== session.snapshot_bundle_seq ||
          chunk.next_row_ordinal !== after + rows.length ||
          (chunk.has_more && rows.length === 0)
        ) {
          throw protocolError('snapshot chunk does not continue the session');
        }
        if (chunk.has_more) {
          // Fetch the next page while this one is staged (server time overlaps local writes).
          pending = fetchChunk(after + rows.length);
          pending.catch(() => undefined);
        }
        const base = after;
        await this.runner.tx((db) => {
          rows.forEach((r, i) => {
            const ops = this.#checkRow(r.schema, r.table);
            if (r.row_version <= 0 || r.payload === null || typeof r.payload !== 'object') {
              throw protocolError('snapshot row is malformed');
            }
            const key = wireKeyToLocal(ops.m, r.key);
            stmt(
              db,
              `INSERT INTO _sync_snapshot_stage(snapshot_id, row_ordinal, schema_name, table_name, key_json, row_version, payload)
               VALUES (?, ?, ?, ?, ${keyJsonFromParams(ops.m)}, ?, ?)`,
            ).run(sid, base + i + 1, schema, r.table, ...key.text, r.row_version, JSON.stringify(r.payload));
          });
        }, signal);
        after += rows.length;
        this.#hooks.progress({ phase: plan.phase, done: after, total: session.row_count });
        if (!chunk.has_more) break;
      }
      if (after !== session.row_count) {
        throw protocolError('snapshot row count does not match the session', {
          expected: session.row_count,
          got: after,
        });
      }
      const rotated = await this.#applySnapshot(
        plan,
        sid,
        session.snapshot_bundle_seq,
        session.row_count,
        signal,
      );
      if (rotated) this.#hooks.sourceChanged(rotated);
      return {
        outcome: 'applied_snapshot',
        restore: { bundleSeq: session.snapshot_bundle_seq, rowCount: session.row_count },
        ...(rotated ? { rotatedSourceId: rotated } : {}),
      };
    } finally {
      t.request({ method: 'DELETE', path: `/sync/snapshot-sessions/${encodeURIComponent(sid)}` }).catch(
        () => undefined,
      );
    }
  }

  /**
   * A remote replace drops the local intents that were never pushed (the scope already has its
   * data). Each is written to the conflict log first, so nothing acknowledged vanishes unrecorded.
   */
  #recordDiscarded(db: SqliteDb): void {
    const schema = this.cfg.schema;
    const ob = readOutbox(db);
    const rows = [
      ...(ob.state === 'prepared'
        ? (stmt(
            db,
            `SELECT table_name, key_json, op, base_row_version, local_payload AS payload FROM _sync_outbox_rows`,
          ).all() as Array<Record<string, unknown>>)
        : []),
      ...(stmt(
        db,
        `SELECT table_name, key_json, op, base_row_version, payload FROM _sync_dirty_rows WHERE schema_name = ?`,
      ).all(schema) as Array<Record<string, unknown>>),
    ];
    for (const r of rows) {
      const ops = this.ops.get(String(r.table_name));
      if (!ops) continue;
      const payload = (r.payload as string | null) ?? null;
      if (payload === null && String(r.op) !== 'DELETE') continue;
      recordConflict(db, {
        schema,
        table: ops.m.table,
        keyJson: String(r.key_json),
        wireKey: localKeyToWire(ops.m, JSON.parse(String(r.key_json)) as Record<string, unknown>),
        reason: 'discarded_by_remote_state',
        localOp: payload === null ? 'DELETE' : String(r.op) === 'UPDATE' ? 'UPDATE' : 'INSERT',
        localPayload: payload,
        baseRowVersion: Number(r.base_row_version),
        serverRowVersion: 0,
        serverRowDeleted: false,
        serverRow: null,
        resolution: 'accept-server',
        rule: 'remote-state',
        localLost: true,
      });
    }
  }

  /** The atomic swap: wipe managed tables, load the staged snapshot, restore local intents. */
  async #applySnapshot(
    plan: RebuildPlan,
    sid: string,
    bundleSeq: number,
    rowCount: number,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const schema = this.cfg.schema;
    let rotated: string | undefined;
    const tables = this.models.map((m) => m.table);
    await this.runner.tx((db) => {
      const att = readAttachment(db);
      if (att.bindingState !== 'attached' && !plan.bindUser) {
        throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', 'snapshot apply needs an attached binding');
      }
      beginApply(db);
      // Local intents to carry over: an uncommitted outbox first, newer dirty rows over it.
      type Intent = { table: string; keyJson: string; base: number; payload: string | null };
      const intents = new Map<string, Intent>();
      if (plan.preserve !== 'none') {
        const ob = readOutbox(db);
        if (!(ob.state === 'committed_remote' || plan.dropCommittedOutbox)) {
          for (const r of stmt(
            db,
            `SELECT table_name, key_json, base_row_version, local_payload FROM _sync_outbox_rows`,
          ).all() as Array<Record<string, unknown>>) {
            intents.set(`${r.table_name}\u0000${r.key_json}`, {
              table: String(r.table_name),
              keyJson: String(r.key_json),
              base: Number(r.base_row_version),
              payload: (r.local_payload as string | null) ?? null,
            });
          }
        }
        for (const r of stmt(
          db,
          `SELECT table_name, key_json, base_row_version, payload FROM _sync_dirty_rows`,
        ).all() as Array<Record<string, unknown>>) {
          const k = `${r.table_name}\u0000${r.key_json}`;
          const prev = intents.get(k);
          intents.set(k, {
            table: String(r.table_name),
            keyJson: String(r.key_json),
            base: prev ? prev.base : Number(r.base_row_version),
            payload: (r.payload as string | null) ?? null,
          });
        }
      }
      const managed = stmt(db, `SELECT table_name FROM _sync_managed_tables WHERE schema_name = ?`)
        .pluck()
        .all(schema) as string[];
      for (const t of new Set([...managed.filter((x) => this.ops.has(x)), ...tables])) {
        db.exec(`DELETE FROM ${quoteIdent(t)}`);
      }
      stmt(db, `DELETE FROM _sync_row_state WHERE schema_name = ?`).run(schema);
      if (plan.preserve === 'none') this.#recordDiscarded(db);
      stmt(db, `DELETE FROM _sync_dirty_rows`).run();
      stmt(db, `DELETE FROM _sync_push_stage`).run();
      stmt(db, `DELETE FROM _sync_orphan_rows WHERE schema_name = ?`).run(schema);
      clearOutbox(db);
      const insRs = stmt(
        db,
        `INSERT INTO _sync_row_state(schema_name, table_name, key_json, row_version, deleted) VALUES (?, ?, ?, ?, 0)
         ON CONFLICT(schema_name, table_name, key_json) DO UPDATE SET row_version = excluded.row_version, deleted = 0`,
      );
      let n = 0;
      // Tables whose columns all convert inside SQLite are applied set-based (one INSERT … SELECT);
      // the others row by row, paging through the stage (a statement cannot write while another
      // iterates; paging keeps memory bounded).
      const setBased = [...this.ops.values()].filter((o) => o.setBased);
      for (const o of setBased) n += o.applyStagedSet(db, sid);
      const skip = setBased.map((o) => sqlString(o.m.table)).join(', ');
      const page = stmt(
        db,
        `SELECT row_ordinal, table_name, key_json, row_version, payload FROM _sync_snapshot_stage
         WHERE snapshot_id = ? AND row_ordinal > ?${skip ? ` AND table_name NOT IN (${skip})` : ''}
         ORDER BY row_ordinal LIMIT 2000`,
      );
      for (let after = 0; ; ) {
        const staged = page.all(sid, after) as Array<{
          row_ordinal: number;
          table_name: string;
          key_json: string;
          row_version: number;
          payload: string;
        }>;
        if (staged.length === 0) break;
        for (const r of staged) {
          this.tableOps(r.table_name).upsertWire(db, JSON.parse(r.payload) as unknown);
          insRs.run(schema, r.table_name, r.key_json, r.row_version);
          n++;
        }
        after = Number(staged[staged.length - 1]?.row_ordinal);
      }
      if (n !== rowCount)
        throw protocolError('staged snapshot row count does not match', { expected: rowCount, got: n });
      // Re-apply the carried-over intents locally and queue them again; an intent whose parent is
      // not in the snapshot waits in the stash (its push then gets a foreign_key conflict).
      trackForeignKeys(db, this.#fk, schema);
      for (const i of intents.values()) {
        const ops = this.ops.get(i.table);
        if (!ops) continue;
        const keyObj = JSON.parse(i.keyJson) as Record<string, unknown>;
        const bind = ops.m.keyColumns.map((c) =>
          c.isBlob ? Buffer.from(String(keyObj[c.key]), 'hex') : (keyObj[c.key] as unknown),
        );
        if (i.payload === null) ops.delete(db, bind);
        else ops.upsertLocal(db, JSON.parse(i.payload) as LocalPayload);
        const rs = stmt(
          db,
          `SELECT row_version FROM _sync_row_state WHERE schema_name = ? AND table_name = ? AND key_json = ?`,
        )
          .pluck()
          .get(schema, i.table, i.keyJson) as number | undefined;
        const base = plan.preserve === 'rebase' ? (rs ?? 0) : i.base;
        if (i.payload === null && rs === undefined && plan.preserve === 'rebase') continue;
        requeueDirty(db, schema, i.table, i.keyJson, i.payload, base, true);
      }
      let sourceId = att.currentSourceId;
      if (plan.rotateTo) {
        const next = plan.rotateTo.newSourceId;
        ensureSourceRow(db, next);
        const fresh = stmt(
          db,
          `SELECT next_source_bundle_id, replaced_by_source_id FROM _sync_source_state WHERE source_id = ?`,
        ).get(next) as { next_source_bundle_id: number; replaced_by_source_id: string };
        if (Number(fresh.next_source_bundle_id) !== 1 || fresh.replaced_by_source_id !== '') {
          throw protocolError('replacement source is not fresh', { sourceId: next });
        }
        stmt(db, `UPDATE _sync_source_state SET replaced_by_source_id = ? WHERE source_id = ?`).run(
          next,
          sourceId,
        );
        sourceId = next;
        rotated = next;
      }
      if (plan.bindUser) {
        stmt(
          db,
          `UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = ?, pending_initialization_id = ''
           WHERE singleton_key = 1`,
        ).run(plan.bindUser);
      }
      stmt(
        db,
        `UPDATE _sync_attachment_state SET current_source_id = ?, last_bundle_seq_seen = ?, rebuild_required = 0
         WHERE singleton_key = 1`,
      ).run(sourceId, bundleSeq);
      if (plan.advanceSourceFloor) raiseSourceFloor(db, sourceId, plan.advanceSourceFloor);
      if (plan.clearOperation) setOperation(db, { kind: 'none' });
      stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
      endApply(db);
    }, signal);
    this.#hooks.applied({ kind: 'snapshot', tables, rows: rowCount, lastBundleSeqSeen: bundleSeq });
    return rotated;
  }
}

function recoveryError(reason: string, cause: unknown): ClientError {
  return new ClientError(
    'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
    `source recovery required (${reason}); call rebuild()`,
    {
      cause,
      details: { reason },
    },
  );
}

function statusIsFetch(e: unknown): boolean {
  const path = e instanceof ClientError ? String(e.message) : '';
  return path.startsWith('/sync/committed-bundles/');
}

/** Applies one authoritative server row (upsert or delete) with its row state; clears its dirty row. */
function applyServerRow(
  db: SqliteDb,
  ops: TableOps,
  key: { text: string[]; bind: Array<string | Buffer> },
  row: BundleRow,
): void {
  if (row.op === 'DELETE') {
    ops.delete(db, key.bind);
    ops.setRowState(db, key.text, row.row_version, true);
  } else {
    ops.upsertWire(db, row.payload);
    ops.setRowState(db, key.text, row.row_version, false);
  }
  ops.deleteDirty(db, key.text);
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

export function newSourceId(): string {
  return randomUUID();
}
