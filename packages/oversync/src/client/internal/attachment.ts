/**
 * The client's hold on its database and its user: the ownership guard (one client per database
 * file in a process), open (pragmas, metadata migration, triggers, source id), the binding checks
 * every sync operation makes first, attach (the connect lifecycle and the remote replace it may
 * call for), detach and uninstall. The facade (client.ts) queues these calls; nothing here queues.
 */
import { realpathSync } from 'node:fs';
import { ClientError } from '../errors.js';
import type { SyncClientOptions } from '../options.js';
import { clientWinsResolver, serverWinsResolver } from '../resolvers.js';
import type { Logger } from '../transport-types.js';
import type { AttachResult, ConflictResolver, DetachResult } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import {
  type AttachmentState,
  beginApply,
  beginRemoteReplace,
  bindAttached,
  countDirty,
  countOutbox,
  dropMetadata,
  endApply,
  type GateState,
  generateSourceId,
  managedTables,
  openMetadata,
  readAttachment,
  readGate,
  readOperation,
  readPending,
  seedDirtyFromTable,
  setSourceAndSchema,
  wipeForDetach,
} from './local-store.js';
import { keepSourceRebuild, rebuild } from './rebuild.js';
import type { Remote } from './remote.js';
import { SyncContext, type SyncHooks } from './sync-context.js';
import { dropTriggers, installTriggers, loadTableModels, type TableModel } from './table-model.js';
import type { TxRunner } from './writer.js';

/** Database files (by real path) and in-memory databases owned by a client of this process. */
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

function resolveResolver(r: SyncClientOptions['resolver']): ConflictResolver {
  if (r === 'client-wins') return clientWinsResolver;
  if (r === 'server-wins') return serverWinsResolver;
  return r as ConflictResolver;
}

/** The sync hooks the facade handles (events and metrics); the binding hooks are handled here. */
export type ReportHooks = Pick<SyncHooks, 'progress' | 'applied' | 'conflict'>;

export class Attachment {
  readonly #runner: TxRunner;
  readonly #remote: Remote;
  readonly #options: SyncClientOptions;
  readonly #hooks: ReportHooks;
  readonly #logger: Logger;
  #ctx: SyncContext | undefined;
  #models: TableModel[] = [];
  #ownerKey: string | undefined;
  #opened = false;
  #connected = false;
  #userId = '';

  constructor(
    runner: TxRunner,
    remote: Remote,
    options: SyncClientOptions,
    hooks: ReportHooks,
    logger: Logger,
  ) {
    this.#runner = runner;
    this.#remote = remote;
    this.#options = options;
    this.#hooks = hooks;
    this.#logger = logger;
  }

  /** True after a successful attach in this process (until detach or a lost binding). */
  get connected(): boolean {
    return this.#connected;
  }

  /** The attached user ('' when anonymous). */
  get userId(): string {
    return this.#userId;
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

  /** Claims the database for this client; throws when another client of this process owns it. */
  #claim(): void {
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
  }

  /** Gives the database up (close and uninstall). */
  release(): void {
    this.#connected = false;
    if (this.#ownerKey && owners.get(this.#ownerKey) === this) owners.delete(this.#ownerKey);
    try {
      memoryOwners.delete(this.#runner.db);
    } catch {
      // the writer's database is not reachable (e.g. a coordinator proxy): nothing was registered
    }
  }

  /** Claims the database, migrates the metadata, installs the triggers and loads the source id. */
  async open(signal?: AbortSignal): Promise<void> {
    if (!this.#ownerKey && !this.#opened) {
      this.#claim();
      this.#setPragmas();
    }
    const schema = this.#options.schema;
    const result = await this.#runner.tx((db) => {
      openMetadata(db, schema);
      const models = loadTableModels(
        db,
        this.#options.tables.map((t) => ({ table: t.table, syncKeyColumns: t.syncKeyColumns })),
      );
      installTriggers(db, models, schema);
      const att = readAttachment(db);
      let sourceId = att.currentSourceId;
      if (!sourceId) {
        sourceId = generateSourceId(db, '');
        if (att.bindingState === 'anonymous') {
          // First open (or after uninstall): existing rows become local intents.
          for (const m of models) seedDirtyFromTable(db, schema, m);
        }
      }
      setSourceAndSchema(db, sourceId, schema);
      return { models, sourceId, att: readAttachment(db) };
    }, signal);
    this.#models = result.models;
    this.#remote.sourceId = result.sourceId;
    if (result.att.bindingState === 'attached') this.#userId = result.att.attachedUserId;
    if (!this.#ctx) {
      const o = this.#options;
      this.#ctx = new SyncContext(
        this.#runner,
        this.#remote,
        {
          schema,
          uploadLimit: o.uploadLimit,
          downloadLimit: o.downloadLimit,
          snapshotChunkRows: o.snapshotChunkRows,
          maxConflictRetries: o.maxConflictRetries,
          maxUnstructuredConflicts: o.maxUnstructuredConflicts,
          resolver: resolveResolver(o.resolver),
        },
        this.#models,
        {
          progress: (e) => this.#hooks.progress(e),
          applied: (e) => this.#hooks.applied(e),
          conflict: (context, resolution, record) => this.#hooks.conflict(context, resolution, record),
          sourceChanged: (id) => {
            this.#remote.sourceId = id;
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

  requireOpen(name: string): SyncContext {
    if (!this.#opened || !this.#ctx) {
      throw new ClientError('OVERSYNC_CLIENT_OPEN_REQUIRED', `${name} needs open()`);
    }
    return this.#ctx;
  }

  requireAttachedHere(name: string): SyncContext {
    const ctx = this.requireOpen(name);
    if (!this.#connected) throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', `${name} needs attach()`);
    return ctx;
  }

  /** Attached in this process, and the durable binding still says so (one read). */
  async requireConnected(name: string, signal?: AbortSignal): Promise<SyncContext> {
    const ctx = this.requireAttachedHere(name);
    const att = await this.#runner.read((db) => readAttachment(db), signal);
    this.#checkBinding(name, att);
    return ctx;
  }

  #checkBinding(name: string, att: AttachmentState): void {
    if (
      att.bindingState !== 'attached' ||
      att.attachedUserId !== this.#userId ||
      att.currentSourceId !== this.#remote.sourceId
    ) {
      this.#connected = false;
      throw new ClientError('OVERSYNC_CLIENT_ATTACH_REQUIRED', `${name} needs attach(): the binding changed`);
    }
  }

  /**
   * The checks shared by push, pull, sync and rebuild, on one read of the local state: attached
   * in this process with the binding unchanged, no remote replace pending, no source recovery
   * (unless rebuilding). An interrupted rebuild is finished first (unless downloads are paused);
   * the state is then read again.
   */
  async gates(
    name: string,
    signal: AbortSignal | undefined,
    opts: { allowRecovery: boolean; downloadsPaused: boolean },
  ): Promise<{ ctx: SyncContext; gate: GateState }> {
    const ctx = this.requireAttachedHere(name);
    const gate = await this.#runner.read((db) => readGate(db), signal);
    const { att, op } = gate;
    this.#checkBinding(name, att);
    if (op.kind === 'source_recovery' && !opts.allowRecovery) {
      throw new ClientError(
        'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
        `${name}: source recovery required (${op.reason}); call rebuild()`,
        { details: { reason: op.reason } },
      );
    }
    if (op.kind === 'remote_replace') {
      throw new ClientError(
        'OVERSYNC_CLIENT_DESTRUCTIVE_TRANSITION_IN_PROGRESS',
        `${name}: a remote replace is pending; attach() again`,
      );
    }
    if (att.rebuildRequired && !opts.allowRecovery && !opts.downloadsPaused) {
      // An earlier rebuild was interrupted: finish it first (the reference client fails with
      // RebuildRequired until the app calls Rebuild; a frozen outbox could then never drain).
      await keepSourceRebuild(ctx, 'recover', signal);
      return { ctx, gate: await this.#runner.read((db) => readGate(db), signal) };
    }
    return { ctx, gate };
  }

  /** Opens, then binds the user: resumed, connect lifecycle, or a remote replace. */
  async attach(userId: string, signal?: AbortSignal): Promise<AttachResult> {
    const user = userId.trim();
    if (!user) throw new ClientError('OVERSYNC_CLIENT_INVALID_OPTIONS', 'attach needs a non-empty user id');
    await this.open(signal);
    const ctx = this.requireOpen('attach');
    const state = await this.#runner.read(
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
          { details: { pendingUser: state.op.targetUserId } },
        );
      }
      return this.#remoteReplace(ctx, user, signal);
    }
    if (state.att.bindingState === 'attached') {
      if (state.att.attachedUserId === user && state.att.currentSourceId === this.#remote.sourceId) {
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
    const caps = await this.#remote.capabilities(signal);
    if (!caps.features.connect_lifecycle) {
      throw new ClientError(
        'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED',
        'server does not support the connect lifecycle',
      );
    }
    const res = await this.#remote.connect(state.pending > 0, signal);
    switch (res.resolution) {
      case 'retry_later':
        return { status: 'retry_later', retryAfterSeconds: res.retry_after_seconds ?? 1 } as const;
      case 'initialize_empty':
      case 'initialize_local': {
        const initId = res.resolution === 'initialize_local' ? (res.initialization_id ?? '') : '';
        if (res.resolution === 'initialize_local' && !initId) {
          throw new ClientError('OVERSYNC_CLIENT_PROTOCOL', 'initialize_local without initialization_id');
        }
        await this.#runner.tx((db) => bindAttached(db, user, initId), signal);
        this.#userId = user;
        this.#connected = true;
        return {
          status: 'connected',
          outcome: res.resolution === 'initialize_local' ? 'seeded_from_local' : 'started_empty',
        } as const;
      }
      case 'remote_authoritative': {
        await this.#runner.tx((db) => beginRemoteReplace(db, user), signal);
        return this.#remoteReplace(ctx, user, signal);
      }
    }
  }

  /** Replaces all local sync state with the server's (remote_authoritative). */
  async #remoteReplace(ctx: SyncContext, user: string, signal?: AbortSignal): Promise<AttachResult> {
    const r = await rebuild(
      ctx,
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

  /** Wipes the user's data and rotates the source, unless rows are pending and `force` is off. */
  async detach(force: boolean, signal?: AbortSignal): Promise<DetachResult> {
    this.requireOpen('detach');
    const pending = await this.#runner.read((db) => readPending(db), signal);
    if (pending.total > 0 && !force)
      return { outcome: 'blocked_unsynced_data', pendingRowCount: pending.total };
    const schema = this.#options.schema;
    const newSource = await this.#runner.tx((db) => {
      beginApply(db);
      const tables = new Set([...managedTables(db, schema), ...this.#models.map((m) => m.table)]);
      const next = wipeForDetach(db, tables);
      endApply(db);
      return next;
    }, signal);
    this.#remote.sourceId = newSource;
    this.#connected = false;
    this.#userId = '';
    return { outcome: 'detached', pendingRowCount: pending.total };
  }

  /** Drops the triggers and the metadata tables; business data stays. */
  async uninstall(signal?: AbortSignal): Promise<void> {
    await this.#runner.tx((db) => {
      const managed = managedTables(db);
      for (const t of new Set([...managed, ...this.#models.map((m) => m.table)])) dropTriggers(db, t);
      dropMetadata(db);
    }, signal);
  }
}
