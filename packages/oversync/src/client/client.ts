import { channel } from 'node:diagnostics_channel';
import { realpathSync } from 'node:fs';
import {
  bundleChangeEventSchema,
  capabilitiesResponseSchema,
  connectResponseSchema,
} from '../shared/wire.js';
import { ClientError, isClientError, isLifecyclePreconditionError } from './errors.js';
import { type ConflictQuery, listConflicts } from './internal/conflict-log.js';
import {
  beginApply,
  clearOutbox,
  countDirty,
  countOutbox,
  endApply,
  ensureSourceRow,
  readAttachment,
  readOperation,
  readOutbox,
  setOperation,
  stmt,
} from './internal/db-ops.js';
import { SyncEngine } from './internal/engine.js';
import { METADATA_DDL, METADATA_TABLES, migrateMetadata, quoteIdent } from './internal/local-schema.js';
import { parseSse } from './internal/sse.js';
import {
  dropTriggers,
  installTriggers,
  keyJsonExpr,
  loadTableModels,
  payloadExpr,
  type TableModel,
} from './internal/table-model.js';
import { type FetchLike, type Logger, sleep, statusOf, Transport } from './internal/transport.js';
import { isCoordinator, type SqliteDb, TxRunner } from './internal/writer.js';
import { parseOptions, type SyncClientOptions, type SyncClientOptionsInput } from './options.js';
import { clientWinsResolver, serverWinsResolver } from './resolvers.js';
import type {
  AppliedEvent,
  AttachResult,
  ClientEvents,
  ConflictRecord,
  ConflictResolver,
  DetachResult,
  PendingStatus,
  PullReport,
  PushReport,
  RebuildReport,
  SyncReport,
  SyncStatus,
  SyncThenDetachResult,
} from './types.js';

export interface ClientMetrics {
  readonly bundlesPushed: number;
  readonly bundlesPulled: number;
  readonly snapshotsApplied: number;
  readonly rowsApplied: number;
  readonly conflictsResolved: number;
  readonly operationErrors: number;
  readonly connected: boolean;
  readonly backgroundRunning: boolean;
}

export interface OpOptions {
  signal?: AbortSignal;
}

/** An offline-first sync client over one local SQLite database. */
export interface SyncClient {
  readonly options: SyncClientOptions;
  /** The current sync source id ('' before `open()`). */
  readonly sourceId: string;
  /** The attached user ('' when anonymous). */
  readonly userId: string;
  /** True after a successful `attach()` in this process. */
  readonly connected: boolean;
  open(opts?: OpOptions): Promise<void>;
  attach(userId: string, opts?: OpOptions): Promise<AttachResult>;
  detach(opts?: OpOptions & { force?: boolean }): Promise<DetachResult>;
  syncThenDetach(opts?: OpOptions): Promise<SyncThenDetachResult>;
  pushPending(opts?: OpOptions): Promise<PushReport>;
  pullToStable(opts?: OpOptions): Promise<PullReport>;
  sync(opts?: OpOptions): Promise<SyncReport>;
  rebuild(opts?: OpOptions): Promise<RebuildReport>;
  status(opts?: OpOptions): Promise<SyncStatus>;
  pendingStatus(opts?: OpOptions): Promise<PendingStatus>;
  /**
   * The device's conflict log, oldest first: every conflict resolved on this device, with both
   * versions, the resolution applied and whether the local intent was lost. Entries are written in
   * the transaction that applied their plan, so they survive crashes; `detach()` clears them with
   * the user's data. Does not contend with a running sync.
   */
  conflicts(opts?: OpOptions & ConflictQuery): Promise<ConflictRecord[]>;
  /** Starts the background uploader and downloader (watch-driven when enabled). */
  start(opts?: OpOptions): void;
  stop(): Promise<void>;
  /** Wakes the background uploader now (e.g. after an app write). */
  notifyLocalChange(): void;
  pauseUploads(): void;
  resumeUploads(): void;
  pauseDownloads(): void;
  resumeDownloads(): void;
  on<E extends keyof ClientEvents>(event: E, listener: (e: ClientEvents[E]) => void): () => void;
  /** Counters since creation. */
  metrics(): ClientMetrics;
  /**
   * Every `applied` event (server data written locally) as an async iterable, e.g. to refresh a
   * UI; ends when the signal aborts or the client closes. Slow consumers get the newest events
   * (the buffer keeps the last `bufferSize`, default 256).
   */
  changes(opts?: { signal?: AbortSignal; bufferSize?: number }): AsyncIterable<AppliedEvent>;
  /** Drops the triggers and metadata tables; business data stays. Closes the client. */
  uninstall(opts?: OpOptions): Promise<void>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const owners = new Map<string, object>();
const memoryOwners = new WeakSet<object>();

function ownershipKey(db: SqliteDb): string | undefined {
  const list = db.pragma('database_list') as Array<{ name: string; file: string }>;
  const file = list.find((d) => d.name === 'main')?.file ?? '';
  if (!file) return undefined;
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

const channels = {
  attach: channel('x:oversync:client-attach'),
  push: channel('x:oversync:client-push'),
  pull: channel('x:oversync:client-pull'),
  rebuild: channel('x:oversync:client-rebuild'),
  sync: channel('x:oversync:client-sync'),
};

const noopLogger: Logger = {};

function resolveResolver(r: SyncClientOptions['resolver']): ConflictResolver {
  if (r === 'client-wins') return clientWinsResolver;
  if (r === 'server-wins') return serverWinsResolver;
  return r as ConflictResolver;
}

class SyncClientImpl implements SyncClient {
  readonly options: SyncClientOptions;
  readonly #runner: TxRunner;
  readonly #transport: Transport;
  readonly #logger: Logger;
  #engine: SyncEngine | undefined;
  #models: TableModel[] = [];
  #ownerKey: string | undefined;
  #opened = false;
  #connected = false;
  #userId = '';
  #closed = false;
  #closing: Promise<void> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #listeners = new Map<string, Set<(e: unknown) => void>>();
  #uploadsPaused = false;
  #downloadsPaused = false;
  #bg: { ac: AbortController; done: Promise<void>; wakeUpload: () => void } | undefined;
  #unsubscribeChanges: (() => void) | undefined;
  #metrics = {
    bundlesPushed: 0,
    bundlesPulled: 0,
    snapshotsApplied: 0,
    rowsApplied: 0,
    conflictsResolved: 0,
    operationErrors: 0,
  };

  constructor(options: SyncClientOptions) {
    this.options = options;
    this.#logger = (options.logger as Logger | undefined) ?? noopLogger;
    this.#runner = new TxRunner(options.writer, options.durability);
    this.#transport = new Transport({
      baseUrl: options.baseUrl,
      fetch: (options.fetch as FetchLike | undefined) ?? ((u, i) => globalThis.fetch(u, i)),
      token: options.token as never,
      retry: options.retry,
      logger: this.#logger,
    });
  }

  get sourceId(): string {
    return this.#transport.sourceId;
  }
  get userId(): string {
    return this.#userId;
  }
  get connected(): boolean {
    return this.#connected;
  }

  on<E extends keyof ClientEvents>(event: E, listener: (e: ClientEvents[E]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    const l = listener as (e: unknown) => void;
    set.add(l);
    return () => set.delete(l);
  }

  #emit<E extends keyof ClientEvents>(event: E, e: ClientEvents[E]): void {
    if (event === 'progress') (this.options.onProgress as ((x: unknown) => void) | undefined)?.(e);
    for (const l of this.#listeners.get(event) ?? []) {
      try {
        l(e);
      } catch (err) {
        this.#logger.warn?.({ err, event }, 'oversync client: listener threw');
      }
    }
  }

  /** Runs one public operation at a time, in call order. */
  #exclusive<T>(name: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new ClientError('OVERSYNC_CLIENT_CLOSED', `${name}: client is closed`));
    }
    const run = async (): Promise<T> => {
      if (signal?.aborted)
        throw new ClientError('OVERSYNC_CLIENT_ABORTED', `${name} aborted`, { cause: signal.reason });
      return fn();
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  changes(opts: { signal?: AbortSignal; bufferSize?: number } = {}): AsyncIterable<AppliedEvent> {
    const self = this;
    const size = Math.max(1, opts.bufferSize ?? 256);
    return {
      async *[Symbol.asyncIterator]() {
        const buffer: AppliedEvent[] = [];
        let wake: (() => void) | undefined;
        let done = self.#closed;
        const notify = () => {
          const w = wake;
          wake = undefined;
          w?.();
        };
        const offApplied = self.on('applied', (e) => {
          buffer.push(e);
          if (buffer.length > size) buffer.shift();
          notify();
        });
        const offClosed = self.on('closed', () => {
          done = true;
          notify();
        });
        const onAbort = () => {
          done = true;
          notify();
        };
        opts.signal?.addEventListener('abort', onAbort, { once: true });
        if (opts.signal?.aborted) done = true;
        try {
          for (;;) {
            const next = buffer.shift();
            if (next) {
              yield next;
              continue;
            }
            if (done) return;
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
          }
        } finally {
          offApplied();
          offClosed();
          opts.signal?.removeEventListener('abort', onAbort);
        }
      },
    };
  }

  metrics(): ClientMetrics {
    return { ...this.#metrics, connected: this.#connected, backgroundRunning: this.#bg !== undefined };
  }

  async #traced<T>(ch: keyof typeof channels, fn: () => Promise<T>): Promise<T> {
    const c = channels[ch];
    const start = performance.now();
    try {
      const r = await fn();
      if (c.hasSubscribers) c.publish({ operation: ch, durationMs: performance.now() - start, result: r });
      return r;
    } catch (error) {
      this.#metrics.operationErrors++;
      if (c.hasSubscribers) c.publish({ operation: ch, durationMs: performance.now() - start, error });
      throw error;
    }
  }

  #setPragmas(): void {
    const db = this.#runner.db;
    if (db.inTransaction) return;
    db.pragma('foreign_keys = ON');
    if (!this.#runner.viaCoordinator) {
      const mode = String(db.pragma('journal_mode', { simple: true }));
      if (mode !== 'wal' && mode !== 'memory') db.pragma('journal_mode = WAL');
    }
  }

  async #openLocked(signal?: AbortSignal): Promise<void> {
    if (!this.#ownerKey && !this.#opened) {
      const db = this.#runner.db;
      const key = ownershipKey(db);
      if (key) {
        const owner = owners.get(key);
        if (owner && owner !== this) {
          throw new ClientError(
            'OVERSYNC_CLIENT_DATABASE_ALREADY_OWNED',
            'another sync client owns this database',
            {
              details: { file: key },
            },
          );
        }
        owners.set(key, this);
        this.#ownerKey = key;
      } else {
        if (memoryOwners.has(db)) {
          throw new ClientError(
            'OVERSYNC_CLIENT_DATABASE_ALREADY_OWNED',
            'another sync client owns this database',
          );
        }
        memoryOwners.add(db);
      }
      this.#setPragmas();
    }
    const schema = this.options.schema;
    const result = await this.#runner.tx((db) => {
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
      const models = loadTableModels(
        db,
        this.options.tables.map((t) => ({ table: t.table, syncKeyColumns: t.syncKeyColumns })),
      );
      installTriggers(db, models, schema);
      const att = readAttachment(db);
      let sourceId = att.currentSourceId;
      if (!sourceId) {
        sourceId = generateSourceId(db, '');
        if (att.bindingState === 'anonymous') {
          // First open (or after uninstall): existing rows become local intents.
          for (const m of models) {
            db.prepare(
              `INSERT INTO _sync_dirty_rows(schema_name, table_name, key_json, op, base_row_version, payload, dirty_ordinal)
               SELECT ?, ?, ${keyJsonExpr(m, 't')}, 'INSERT', 0, ${payloadExpr(m, 't')},
                 COALESCE((SELECT MAX(dirty_ordinal) FROM _sync_dirty_rows), 0) + ROW_NUMBER() OVER ()
               FROM ${m.quoted} AS t WHERE true
               ON CONFLICT(schema_name, table_name, key_json) DO NOTHING`,
            ).run(schema, m.table);
          }
        }
      }
      ensureSourceRow(db, sourceId);
      stmt(
        db,
        `UPDATE _sync_attachment_state SET current_source_id = ?, schema_name = ? WHERE singleton_key = 1`,
      ).run(sourceId, schema);
      return { models, sourceId, att: readAttachment(db) };
    }, signal);
    this.#models = result.models;
    this.#transport.sourceId = result.sourceId;
    if (result.att.bindingState === 'attached') this.#userId = result.att.attachedUserId;
    if (!this.#engine) {
      this.#engine = new SyncEngine(
        this.#runner,
        this.#transport,
        {
          schema,
          uploadLimit: this.options.uploadLimit,
          downloadLimit: this.options.downloadLimit,
          snapshotChunkRows: this.options.snapshotChunkRows,
          maxConflictRetries: this.options.maxConflictRetries,
          maxUnstructuredConflicts: this.options.maxUnstructuredConflicts,
          resolver: resolveResolver(this.options.resolver),
        },
        this.#models,
        {
          progress: (e) => this.#emit('progress', e),
          applied: (e) => {
            const m = this.#metrics;
            if (e.kind === 'pull') m.bundlesPulled++;
            if (e.kind === 'snapshot') m.snapshotsApplied++;
            if (e.kind === 'replay') m.bundlesPushed++;
            m.rowsApplied += e.rows;
            this.#emit('applied', e);
          },
          conflict: (context, resolution, record) => {
            this.#metrics.conflictsResolved++;
            this.#emit('conflict', { context, resolution, record });
          },
          sourceChanged: (id) => {
            this.#transport.sourceId = id;
          },
          bindingReset: () => {
            this.#connected = false;
            this.#userId = '';
          },
        },
        this.#logger,
      );
    }
    this.#opened = true;
  }

  open(opts: OpOptions = {}): Promise<void> {
    return this.#exclusive('open', () => this.#openLocked(opts.signal), opts.signal);
  }

  #requireOpen(name: string): SyncEngine {
    if (!this.#opened || !this.#engine) {
      throw new ClientError('OVERSYNC_CLIENT_OPEN_REQUIRED', `${name} needs open()`);
    }
    return this.#engine;
  }

  async #requireConnected(name: string, signal?: AbortSignal): Promise<SyncEngine> {
    const engine = this.#requireOpen(name);
    if (!this.#connected) throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', `${name} needs attach()`);
    const att = await this.#runner.tx((db) => readAttachment(db), signal);
    if (
      att.bindingState !== 'attached' ||
      att.attachedUserId !== this.#userId ||
      att.currentSourceId !== this.sourceId
    ) {
      this.#connected = false;
      throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', `${name} needs attach(): the binding changed`);
    }
    return engine;
  }

  /** Gates shared by push, pull, sync and rebuild. */
  async #gates(name: string, signal: AbortSignal | undefined, allowRecovery = false): Promise<void> {
    const { op, att } = await this.#runner.tx(
      (db) => ({ op: readOperation(db), att: readAttachment(db) }),
      signal,
    );
    if (op.kind === 'source_recovery' && !allowRecovery) {
      throw new ClientError(
        'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
        `${name}: source recovery required (${op.reason}); call rebuild()`,
        {
          details: { reason: op.reason },
        },
      );
    }
    if (op.kind === 'remote_replace') {
      throw new ClientError(
        'OVERSYNC_CLIENT_DESTRUCTIVE_TRANSITION_IN_PROGRESS',
        `${name}: a remote replace is pending; attach() again`,
      );
    }
    if (att.rebuildRequired && !allowRecovery && !this.#downloadsPaused) {
      // An earlier rebuild was interrupted: finish it first (the reference client fails with
      // RebuildRequired until the app calls Rebuild; a frozen outbox could then never drain).
      await this.#keepSourceRebuild(this.#requireOpen(name), 'recover', signal);
    }
  }

  attach(userId: string, opts: OpOptions = {}): Promise<AttachResult> {
    const signal = opts.signal;
    return this.#exclusive(
      'attach',
      () =>
        this.#traced('attach', async () => {
          const user = userId.trim();
          if (!user)
            throw new ClientError('OVERSYNC_CLIENT_INVALID_OPTIONS', 'attach needs a non-empty user id');
          await this.#openLocked(signal);
          const engine = this.#requireOpen('attach');
          const state = await this.#runner.tx(
            (db) => ({
              att: readAttachment(db),
              op: readOperation(db),
              pending: countDirty(db) + countOutbox(db),
            }),
            signal,
          );
          if (state.op.kind === 'remote_replace') {
            if (state.op.targetUserId !== user) {
              throw new ClientError(
                'OVERSYNC_CLIENT_ATTACH_LOCAL_STATE_CONFLICT',
                'a remote replace for another user is pending',
                {
                  details: { pendingUser: state.op.targetUserId },
                },
              );
            }
            const r = await this.#remoteReplace(engine, user, signal);
            return r;
          }
          if (state.att.bindingState === 'attached') {
            if (state.att.attachedUserId === user && state.att.currentSourceId === this.sourceId) {
              this.#userId = user;
              this.#connected = true;
              return { status: 'connected', outcome: 'resumed_attached_state' } as const;
            }
            if (state.att.attachedUserId !== user) {
              throw new ClientError(
                'OVERSYNC_CLIENT_ATTACH_BINDING_CONFLICT',
                'attached to another user: detach() first',
                {
                  details: { attachedUser: state.att.attachedUserId },
                },
              );
            }
          }
          const caps = await this.#capabilities(signal);
          if (!caps.features.connect_lifecycle) {
            throw new ClientError(
              'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED',
              'server does not support the connect lifecycle',
            );
          }
          const res = await this.#transport.request({
            method: 'POST',
            path: '/sync/connect',
            body: { has_local_pending_rows: state.pending > 0 },
            schema: connectResponseSchema,
            retryOp: 'connect_request',
            ...(signal ? { signal } : {}),
          });
          switch (res.resolution) {
            case 'retry_later':
              return { status: 'retry_later', retryAfterSeconds: res.retry_after_seconds ?? 1 } as const;
            case 'initialize_empty':
            case 'initialize_local': {
              const initId = res.resolution === 'initialize_local' ? (res.initialization_id ?? '') : '';
              if (res.resolution === 'initialize_local' && !initId) {
                throw new ClientError(
                  'OVERSYNC_CLIENT_PROTOCOL',
                  'initialize_local without initialization_id',
                );
              }
              await this.#runner.tx((db) => {
                stmt(
                  db,
                  `UPDATE _sync_attachment_state SET binding_state = 'attached', attached_user_id = ?,
                     pending_initialization_id = ?, rebuild_required = 0 WHERE singleton_key = 1`,
                ).run(user, initId);
                stmt(
                  db,
                  `UPDATE _sync_outbox_bundle SET initialization_id = ? WHERE singleton_key = 1 AND state = 'prepared'`,
                ).run(initId);
                setOperation(db, { kind: 'none' });
              }, signal);
              this.#userId = user;
              this.#connected = true;
              return {
                status: 'connected',
                outcome: res.resolution === 'initialize_local' ? 'seeded_from_local' : 'started_empty',
              } as const;
            }
            case 'remote_authoritative': {
              await this.#runner.tx((db) => {
                stmt(
                  db,
                  `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '',
                     pending_initialization_id = '' WHERE singleton_key = 1`,
                ).run();
                setOperation(db, { kind: 'remote_replace', targetUserId: user });
              }, signal);
              return this.#remoteReplace(engine, user, signal);
            }
          }
        }),
      signal,
    );
  }

  async #capabilities(signal?: AbortSignal) {
    try {
      return await this.#transport.request({
        method: 'GET',
        path: '/sync/capabilities',
        schema: capabilitiesResponseSchema,
        retryOp: 'connect_capabilities',
        ...(signal ? { signal } : {}),
      });
    } catch (e) {
      const s = statusOf(e);
      if (s === 404 || s === 405 || s === 501) {
        throw new ClientError(
          'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED',
          'server has no capabilities endpoint',
          { cause: e },
        );
      }
      throw e;
    }
  }

  /** Replaces all local sync state with the server's (remote_authoritative). */
  async #remoteReplace(engine: SyncEngine, user: string, signal?: AbortSignal): Promise<AttachResult> {
    const r = await engine.rebuild(
      { phase: 'hydrate', preserve: 'none', bindUser: user, clearOperation: true },
      signal,
    );
    this.#userId = user;
    this.#connected = true;
    return {
      status: 'connected',
      outcome: 'used_remote_state',
      ...(r.restore ? { restore: r.restore } : {}),
    };
  }

  async #pendingLocked(signal?: AbortSignal): Promise<PendingStatus> {
    return this.#runner.tx((db) => {
      const att = readAttachment(db);
      const dirtyRows = countDirty(db);
      const outboxRows = countOutbox(db);
      const pendingInitialization = att.pendingInitializationId !== '';
      const total = dirtyRows + outboxRows + (pendingInitialization ? 1 : 0);
      return { dirtyRows, outboxRows, pendingInitialization, total, blocksDetach: total > 0 };
    }, signal);
  }

  async conflicts(opts: OpOptions & ConflictQuery = {}): Promise<ConflictRecord[]> {
    this.#requireOpen('conflicts');
    return this.#runner.tx((db) => listConflicts(db, opts), opts.signal);
  }

  pendingStatus(opts: OpOptions = {}): Promise<PendingStatus> {
    return this.#exclusive(
      'pendingStatus',
      async () => {
        this.#requireOpen('pendingStatus');
        return this.#pendingLocked(opts.signal);
      },
      opts.signal,
    );
  }

  async #detachLocked(force: boolean, signal?: AbortSignal): Promise<DetachResult> {
    this.#requireOpen('detach');
    const pending = await this.#pendingLocked(signal);
    if (pending.total > 0 && !force)
      return { outcome: 'blocked_unsynced_data', pendingRowCount: pending.total };
    const schema = this.options.schema;
    const newSource = await this.#runner.tx((db) => {
      beginApply(db);
      const managed = stmt(db, `SELECT table_name FROM _sync_managed_tables WHERE schema_name = ?`)
        .pluck()
        .all(schema) as string[];
      const existing = new Set(
        db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all() as string[],
      );
      for (const t of new Set([...managed, ...this.#models.map((m) => m.table)])) {
        if (existing.has(t)) db.exec(`DELETE FROM ${quoteIdent(t)}`);
      }
      stmt(db, `DELETE FROM _sync_row_state`).run();
      stmt(db, `DELETE FROM _sync_dirty_rows`).run();
      stmt(db, `DELETE FROM _sync_push_stage`).run();
      stmt(db, `DELETE FROM _sync_snapshot_stage`).run();
      // The next user must not see this one's data, stashed or in the conflict log.
      stmt(db, `DELETE FROM _sync_orphan_rows`).run();
      stmt(db, `DELETE FROM _sync_deleted_parents`).run();
      stmt(db, `DELETE FROM _sync_conflicts`).run();
      clearOutbox(db);
      // A fresh source per binding: the next user's first push starts at source_bundle_id 1
      // and the checkpoint restarts at 0 (the reference client kept both: pitfall 9).
      const att = readAttachment(db);
      const next = generateSourceId(db, att.currentSourceId);
      ensureSourceRow(db, next);
      stmt(
        db,
        `UPDATE _sync_attachment_state SET binding_state = 'anonymous', attached_user_id = '', pending_initialization_id = '',
           current_source_id = ?, last_bundle_seq_seen = 0, rebuild_required = 0 WHERE singleton_key = 1`,
      ).run(next);
      setOperation(db, { kind: 'none' });
      endApply(db);
      return next;
    }, signal);
    this.#transport.sourceId = newSource;
    this.#connected = false;
    this.#userId = '';
    return { outcome: 'detached', pendingRowCount: pending.total };
  }

  detach(opts: OpOptions & { force?: boolean } = {}): Promise<DetachResult> {
    return this.#exclusive('detach', () => this.#detachLocked(opts.force === true, opts.signal), opts.signal);
  }

  async #pushLocked(signal?: AbortSignal): Promise<PushReport> {
    const engine = await this.#requireConnected('pushPending', signal);
    await this.#gates('pushPending', signal);
    if (this.#uploadsPaused) return { outcome: 'skipped_paused', conflictsResolved: 0 };
    return this.#traced('push', () => engine.pushPending(signal));
  }

  pushPending(opts: OpOptions = {}): Promise<PushReport> {
    return this.#exclusive('pushPending', () => this.#pushLocked(opts.signal), opts.signal);
  }

  async #pullLocked(signal?: AbortSignal): Promise<PullReport> {
    const engine = await this.#requireConnected('pullToStable', signal);
    await this.#gates('pullToStable', signal);
    const outboxRows = await this.#runner.tx((db) => countOutbox(db), signal);
    if (outboxRows > 0) {
      throw new ClientError(
        'OVERSYNC_CLIENT_PENDING_PUSH_REPLAY',
        'a frozen push must be replayed first: pushPending()',
        {
          details: { outboundCount: outboxRows },
        },
      );
    }
    if (this.#downloadsPaused) {
      return { outcome: 'skipped_paused', bundlesApplied: 0, rowsApplied: 0, lastBundleSeqSeen: -1 };
    }
    return this.#traced('pull', () => engine.pullToStable(signal));
  }

  pullToStable(opts: OpOptions = {}): Promise<PullReport> {
    return this.#exclusive('pullToStable', () => this.#pullLocked(opts.signal), opts.signal);
  }

  async #statusLocked(signal?: AbortSignal): Promise<SyncStatus> {
    const pending = await this.#pendingLocked(signal);
    return this.#runner.tx((db) => {
      const att = readAttachment(db);
      const op = readOperation(db);
      const live = stmt(db, `SELECT EXISTS(SELECT 1 FROM _sync_row_state WHERE deleted = 0)`).pluck().get();
      return {
        authority: pending.pendingInitialization
          ? 'pending_local_seed'
          : live
            ? 'authoritative_materialized'
            : 'authoritative_empty',
        pending: { ...pending, blocksDetach: pending.total > 0 },
        lastBundleSeqSeen: att.lastBundleSeqSeen,
        userId: att.bindingState === 'attached' ? att.attachedUserId : '',
        sourceId: att.currentSourceId,
        connected: this.#connected,
        rebuildRequired: att.rebuildRequired,
        sourceRecoveryRequired: op.kind === 'source_recovery',
      } as const;
    }, signal);
  }

  status(opts: OpOptions = {}): Promise<SyncStatus> {
    return this.#exclusive(
      'status',
      async () => {
        this.#requireOpen('status');
        return this.#statusLocked(opts.signal);
      },
      opts.signal,
    );
  }

  async #syncLocked(signal?: AbortSignal): Promise<SyncReport> {
    return this.#traced('sync', async () => {
      await this.#requireConnected('sync', signal);
      const push: PushReport = this.#uploadsPaused
        ? { outcome: 'skipped_paused', conflictsResolved: 0 }
        : await this.#pushLocked(signal);
      const pull: PullReport = this.#downloadsPaused
        ? { outcome: 'skipped_paused', bundlesApplied: 0, rowsApplied: 0, lastBundleSeqSeen: -1 }
        : await this.#pullLocked(signal);
      return { push, pull, status: await this.#statusLocked(signal) };
    });
  }

  sync(opts: OpOptions = {}): Promise<SyncReport> {
    return this.#exclusive('sync', () => this.#syncLocked(opts.signal), opts.signal);
  }

  syncThenDetach(opts: OpOptions = {}): Promise<SyncThenDetachResult> {
    const signal = opts.signal;
    return this.#exclusive(
      'syncThenDetach',
      async () => {
        await this.#requireConnected('syncThenDetach', signal);
        let lastSync: SyncReport | undefined;
        let detach: DetachResult = { outcome: 'blocked_unsynced_data', pendingRowCount: 0 };
        let rounds = 0;
        let prev = Number.POSITIVE_INFINITY;
        for (; rounds < 3; ) {
          lastSync = await this.#syncLocked(signal);
          rounds++;
          detach = await this.#detachLocked(false, signal);
          if (detach.outcome === 'detached') break;
          if (detach.pendingRowCount >= prev) break;
          prev = detach.pendingRowCount;
        }
        const remaining = detach.outcome === 'detached' ? 0 : detach.pendingRowCount;
        return {
          ...(lastSync ? { lastSync } : {}),
          detach,
          syncRounds: rounds,
          remainingPendingRowCount: remaining,
          success: detach.outcome === 'detached',
        };
      },
      signal,
    );
  }

  rebuild(opts: OpOptions = {}): Promise<RebuildReport> {
    const signal = opts.signal;
    return this.#exclusive(
      'rebuild',
      () =>
        this.#traced('rebuild', async () => {
          const engine = await this.#requireConnected('rebuild', signal);
          await this.#gates('rebuild', signal, true);
          if (this.#downloadsPaused) return { outcome: 'skipped_paused' } as const;
          const op = await this.#runner.tx((db) => readOperation(db), signal);
          if (op.kind === 'source_recovery') {
            let next = op.replacementSourceId;
            if (!next) {
              next = await this.#runner.tx((db) => {
                const id = generateSourceId(db, this.sourceId);
                setOperation(db, { kind: 'source_recovery', reason: op.reason, replacementSourceId: id });
                return id;
              }, signal);
            }
            return engine.rebuild(
              {
                phase: 'recover',
                preserve: 'keep-base',
                rotateTo: { newSourceId: next, reason: op.reason },
                clearOperation: true,
              },
              signal,
            );
          }
          return this.#keepSourceRebuild(engine, 'hydrate', signal);
        }),
      signal,
    );
  }

  /**
   * Keep-source rebuild that loses nothing: a committed outbox is dropped (the snapshot holds it)
   * and the source floor moves past it; an uncommitted outbox and dirty rows are carried over.
   */
  async #keepSourceRebuild(
    engine: SyncEngine,
    phase: 'hydrate' | 'recover',
    signal?: AbortSignal,
  ): Promise<RebuildReport> {
    const outbox = await this.#runner.tx((db) => readOutbox(db), signal);
    if (outbox.state === 'committed_remote') {
      return engine.rebuild(
        {
          phase,
          preserve: 'rebase',
          dropCommittedOutbox: true,
          advanceSourceFloor: outbox.sourceBundleId + 1,
        },
        signal,
      );
    }
    return engine.rebuild({ phase, preserve: 'keep-base' }, signal);
  }

  pauseUploads(): void {
    this.#uploadsPaused = true;
  }
  resumeUploads(): void {
    this.#uploadsPaused = false;
    this.#bg?.wakeUpload();
  }
  pauseDownloads(): void {
    this.#downloadsPaused = true;
  }
  resumeDownloads(): void {
    this.#downloadsPaused = false;
  }
  notifyLocalChange(): void {
    this.#bg?.wakeUpload();
  }

  start(opts: OpOptions = {}): void {
    if (this.#closed) throw new ClientError('OVERSYNC_CLIENT_CLOSED', 'start: client is closed');
    if (this.#bg) return;
    const ac = new AbortController();
    opts.signal?.addEventListener('abort', () => ac.abort(opts.signal?.reason), { once: true });
    let wake: () => void = () => undefined;
    let pendingWake = false;
    const wakeUpload = () => {
      pendingWake = true;
      wake();
    };
    const waitUpload = (ms: number) =>
      new Promise<void>((resolve) => {
        if (pendingWake) {
          pendingWake = false;
          resolve();
          return;
        }
        const t = setTimeout(done, ms);
        const onAbort = () => done();
        function done() {
          clearTimeout(t);
          ac.signal.removeEventListener('abort', onAbort);
          wake = () => undefined;
          pendingWake = false;
          resolve();
        }
        wake = done;
        ac.signal.addEventListener('abort', onAbort, { once: true });
      });
    const writer = this.options.writer;
    if (isCoordinator(writer) && typeof (writer as { subscribe?: unknown }).subscribe === 'function') {
      this.#unsubscribeChanges = (writer as unknown as { subscribe(l: () => void): () => void }).subscribe(
        () => {
          // Commits of the client's own transactions are not app changes (and would wake it forever).
          if (!this.#runner.busy) wakeUpload();
        },
      );
    }
    const done = Promise.all([this.#uploadLoop(ac.signal, waitUpload), this.#downloadLoop(ac.signal)]).then(
      () => undefined,
    );
    this.#bg = { ac, done, wakeUpload };
  }

  async #uploadLoop(signal: AbortSignal, wait: (ms: number) => Promise<void>): Promise<void> {
    let backoff = this.options.backoffMinMs;
    while (!signal.aborted) {
      try {
        if (this.#connected && !this.#uploadsPaused) {
          const pending = await this.#exclusive('pushPending', () => this.#pendingLocked(signal), signal);
          if (pending.dirtyRows + pending.outboxRows > 0) await this.pushPending({ signal });
        }
        backoff = this.options.backoffMinMs;
        await wait(this.options.uploadIntervalMs);
      } catch (error) {
        if (signal.aborted || this.#closed) return;
        this.#emit('error', { error, loop: 'upload' });
        backoff = isLifecyclePreconditionError(error)
          ? this.options.backoffMinMs
          : Math.min(backoff * 2, this.options.backoffMaxMs);
        await wait(backoff);
      }
    }
  }

  async #downloadLoop(signal: AbortSignal): Promise<void> {
    let backoff = this.options.backoffMinMs;
    let watchAllowed = this.options.watch.mode === 'auto';
    while (!signal.aborted) {
      try {
        if (!this.#connected || this.#downloadsPaused) {
          await sleep(this.options.backoffMinMs, signal);
          continue;
        }
        await this.#pullIfPossible(signal);
        if (watchAllowed) {
          const caps = await this.#capabilities(signal);
          if (caps.features.bundle_change_watch) {
            const outcome = await this.#watch(signal);
            if (outcome === 'forbidden') watchAllowed = false;
            backoff = this.options.backoffMinMs;
            continue;
          }
          watchAllowed = false;
        }
        backoff = this.options.backoffMinMs;
        await sleep(this.options.watch.fallbackIntervalMs, signal);
      } catch (error) {
        if (signal.aborted || this.#closed) return;
        this.#emit('error', { error, loop: 'download' });
        backoff = isLifecyclePreconditionError(error)
          ? this.options.backoffMinMs
          : Math.min(backoff * 2, this.options.backoffMaxMs);
        try {
          await sleep(backoff, signal);
        } catch {
          return;
        }
      }
    }
  }

  async #pullIfPossible(signal: AbortSignal): Promise<void> {
    try {
      await this.pullToStable({ signal });
    } catch (e) {
      if (isClientError(e, 'OVERSYNC_CLIENT_PENDING_PUSH_REPLAY')) {
        this.#bg?.wakeUpload();
        return;
      }
      throw e;
    }
  }

  /** Holds the watch stream open; each bundle event triggers a pull. Fallback polls keep running. */
  async #watch(signal: AbortSignal): Promise<'ended' | 'forbidden'> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const fallback = setInterval(() => {
      this.#pullIfPossible(ac.signal).catch((error) => {
        if (!ac.signal.aborted) this.#emit('error', { error, loop: 'download' });
      });
    }, this.options.watch.fallbackIntervalMs);
    try {
      const after = await this.#runner.tx((db) => readAttachment(db).lastBundleSeqSeen, signal);
      const res = await this.#transport.raw('/sync/watch', { after_bundle_seq: after }, ac.signal);
      if (res.status === 403) {
        await res.body?.cancel();
        return 'forbidden';
      }
      if (!res.ok || !res.body) {
        await res.body?.cancel();
        throw new ClientError('OVERSYNC_CLIENT_HTTP', `/sync/watch: ${res.status}`, {
          retryable: true,
          details: { status: res.status },
        });
      }
      let pulling: Promise<void> | undefined;
      let again = false;
      const trigger = () => {
        if (pulling) {
          again = true;
          return;
        }
        pulling = (async () => {
          do {
            again = false;
            await this.#pullIfPossible(ac.signal);
          } while (again && !ac.signal.aborted);
        })()
          .catch((error) => {
            if (!ac.signal.aborted) this.#emit('error', { error, loop: 'download' });
          })
          .finally(() => {
            pulling = undefined;
          });
      };
      for await (const ev of parseSse(res.body, ac.signal)) {
        if (ev.event !== 'bundle') continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(ev.data);
        } catch {
          continue;
        }
        const e = bundleChangeEventSchema.safeParse(parsed);
        if (!e.success || e.data.bundle_seq <= 0) continue;
        trigger();
      }
      await pulling;
      return 'ended';
    } finally {
      clearInterval(fallback);
      signal.removeEventListener('abort', onAbort);
      ac.abort();
    }
  }

  async stop(): Promise<void> {
    const bg = this.#bg;
    if (!bg) return;
    this.#bg = undefined;
    this.#unsubscribeChanges?.();
    this.#unsubscribeChanges = undefined;
    bg.ac.abort(new ClientError('OVERSYNC_CLIENT_CLOSED', 'background sync stopped'));
    await bg.done.catch(() => undefined);
  }

  uninstall(opts: OpOptions = {}): Promise<void> {
    return this.#exclusive(
      'uninstall',
      async () => {
        this.#requireOpen('uninstall');
        await this.stop();
        await this.#runner.tx((db) => {
          const managed = db.prepare(`SELECT table_name FROM _sync_managed_tables`).pluck().all() as string[];
          for (const t of new Set([...managed, ...this.#models.map((m) => m.table)])) dropTriggers(db, t);
          for (const t of METADATA_TABLES) db.exec(`DROP TABLE IF EXISTS ${t}`);
        }, opts.signal);
        await this.#release();
      },
      opts.signal,
    );
  }

  async #release(): Promise<void> {
    this.#closed = true;
    this.#connected = false;
    if (this.#ownerKey && owners.get(this.#ownerKey) === this) owners.delete(this.#ownerKey);
    try {
      memoryOwners.delete(this.#runner.db);
    } catch {
      // the writer's database is not reachable (e.g. a coordinator proxy): nothing was registered
    }
  }

  close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = (async () => {
        await this.stop();
        this.#closed = true;
        await this.#queue.catch(() => undefined);
        await this.#release();
        this.#emit('closed', {});
      })();
    }
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function generateSourceId(db: SqliteDb, current: string): string {
  for (let i = 0; i < 100; i++) {
    const id = crypto.randomUUID();
    if (id === current) continue;
    const taken = stmt(db, `SELECT 1 FROM _sync_source_state WHERE source_id = ?`).get(id);
    if (!taken) return id;
  }
  throw new ClientError('OVERSYNC_CLIENT_LOCAL_WRITE', 'could not generate a fresh source id');
}

/** Creates a sync client. No I/O happens until `open()`. */
export function createSyncClient(options: SyncClientOptionsInput): SyncClient {
  return new SyncClientImpl(parseOptions(options));
}
