import { channel } from 'node:diagnostics_channel';
import { Emitter, type Logger, SILENT_LOGGER } from '@x/core';
import { ClientError } from './errors.js';
import { Attachment } from './internal/attachment.js';
import { BackgroundSync } from './internal/background.js';
import { listConflicts } from './internal/conflict-log.js';
import { watchLive } from './internal/live-query.js';
import { appliedEvents, LiveState } from './internal/live-state.js';
import { readPending } from './internal/local-store.js';
import { pullToStable } from './internal/pull.js';
import { pushPending } from './internal/push.js';
import { keepSourceRebuild, recoverSource } from './internal/rebuild.js';
import { Remote } from './internal/remote.js';
import { readSyncStatus } from './internal/status.js';
import { Transport } from './internal/transport.js';
import { TxRunner } from './internal/writer.js';
import type { SyncClientOptions } from './options.js';
import type { ClientMetrics, OpOptions, SyncClient } from './sync-client.js';
import type { FetchLike } from './transport-types.js';
import type {
  AppliedEvent,
  AttachResult,
  ClientEvents,
  ClientStatus,
  ConflictQuery,
  ConflictRecord,
  DetachResult,
  PendingStatus,
  PullReport,
  PushReport,
  RebuildReport,
  SyncReport,
  SyncStatus,
  SyncThenDetachResult,
  WatchHandlers,
  WatchOptions,
  WatchParams,
} from './types.js';
import type { SqliteDb } from './writer-types.js';

const channels = {
  attach: channel('x:oversync:client-attach'),
  push: channel('x:oversync:client-push'),
  pull: channel('x:oversync:client-pull'),
  rebuild: channel('x:oversync:client-rebuild'),
  sync: channel('x:oversync:client-sync'),
};

/** The client behind `createSyncClient` (create-sync-client.ts). */
export class SyncClientImpl implements SyncClient {
  readonly options: SyncClientOptions;
  readonly #runner: TxRunner;
  readonly #remote: Remote;
  readonly #logger: Logger;
  readonly #attachment: Attachment;
  #closed = false;
  #closing: Promise<void> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #events: Emitter<ClientEvents>;
  #uploadsPaused = false;
  #downloadsPaused = false;
  #bg: BackgroundSync | undefined;
  readonly #live: LiveState;
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
    this.#logger = options.logger ?? SILENT_LOGGER;
    // A listener that throws is logged; the sync operation that emitted goes on.
    this.#events = new Emitter<ClientEvents>({
      onListenerError: (err, event) => this.#logger.warn({ err, event }, 'oversync client: listener threw'),
    });
    this.#runner = new TxRunner(options.writer, options.durability);
    this.#live = new LiveState({
      runner: this.#runner,
      writer: options.writer,
      logger: this.#logger,
      attached: () => this.#attachment.connected,
      emitStatus: (s) => this.#emit('status', s),
    });
    this.#remote = new Remote(
      new Transport({
        baseUrl: options.baseUrl,
        // every answer (or its absence) sets `status.connected`
        fetch: this.#live.wrapFetch(
          (options.fetch as FetchLike | undefined) ?? ((u, i) => globalThis.fetch(u, i)),
        ),
        token: options.token as never,
        retry: options.retry,
        logger: this.#logger,
      }),
    );
    this.#attachment = new Attachment(
      this.#runner,
      this.#remote,
      options,
      {
        progress: (e) => {
          if (e.phase === 'hydrate' || e.phase === 'recover') this.#live.set({ downloading: true });
          this.#emit('progress', e);
        },
        applied: (e) => {
          this.#live.applied(e.tables);
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
      },
      this.#logger,
    );
  }

  get sourceId(): string {
    return this.#remote.sourceId;
  }
  get userId(): string {
    return this.#attachment.userId;
  }
  get connected(): boolean {
    return this.#attachment.connected;
  }
  get status(): ClientStatus {
    return this.#live.status;
  }

  on<E extends keyof ClientEvents>(event: E, listener: (e: ClientEvents[E]) => void): () => void {
    return this.#events.on(event, listener);
  }

  #emit<E extends keyof ClientEvents>(event: E, e: ClientEvents[E]): void {
    if (event === 'progress') (this.options.onProgress as ((x: unknown) => void) | undefined)?.(e);
    this.#events.emit(event, e);
  }

  /** Runs one public operation at a time, in call order. */
  #exclusive<T>(name: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) {
      return Promise.reject(new ClientError('OVERSYNC_CLIENT_CLOSED', `${name}: client is closed`));
    }
    const run = async (): Promise<T> => {
      if (signal?.aborted)
        throw new ClientError('OVERSYNC_CLIENT_ABORTED', `${name} aborted`, { cause: signal.reason });
      try {
        return await fn();
      } finally {
        // Every operation may change the binding and the pending rows.
        this.#live.refreshConnected();
        this.#live.schedulePendingCount();
      }
    };
    const p = this.#queue.then(run, run);
    this.#queue = p.catch(() => undefined);
    return p;
  }

  changes(opts: { signal?: AbortSignal; bufferSize?: number } = {}): AsyncIterable<AppliedEvent> {
    return appliedEvents(this.#events, () => this.#closed, opts);
  }

  metrics(): ClientMetrics {
    return {
      ...this.#metrics,
      connected: this.#attachment.connected,
      backgroundRunning: this.#bg !== undefined,
    };
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
      this.#live.failed(error, ch);
      if (c.hasSubscribers) c.publish({ operation: ch, durationMs: performance.now() - start, error });
      throw error;
    }
  }

  open(opts: OpOptions = {}): Promise<void> {
    return this.#exclusive(
      'open',
      async () => {
        await this.#attachment.open(opts.signal);
        this.#live.opened();
      },
      opts.signal,
    );
  }

  attach(userId: string, opts: OpOptions = {}): Promise<AttachResult> {
    const signal = opts.signal;
    return this.#exclusive(
      'attach',
      () => this.#traced('attach', () => this.#live.attaching(() => this.#attachment.attach(userId, signal))),
      signal,
    );
  }

  async #pendingLocked(signal?: AbortSignal): Promise<PendingStatus> {
    return this.#runner.read((db) => readPending(db), signal);
  }

  async conflicts(opts: OpOptions & ConflictQuery = {}): Promise<ConflictRecord[]> {
    this.#attachment.requireOpen('conflicts');
    return this.#runner.read((db) => listConflicts(db, opts), opts.signal);
  }

  pendingStatus(opts: OpOptions = {}): Promise<PendingStatus> {
    return this.#exclusive(
      'pendingStatus',
      async () => {
        this.#attachment.requireOpen('pendingStatus');
        return this.#pendingLocked(opts.signal);
      },
      opts.signal,
    );
  }

  detach(opts: OpOptions & { force?: boolean } = {}): Promise<DetachResult> {
    return this.#exclusive(
      'detach',
      async () => {
        const r = await this.#attachment.detach(opts.force === true, opts.signal);
        // the wipe runs with capture off; live queries of any table may have changed
        if (r.outcome === 'detached') this.#live.notify(undefined);
        return r;
      },
      opts.signal,
    );
  }

  #gates(name: string, signal: AbortSignal | undefined, allowRecovery = false) {
    return this.#attachment.gates(name, signal, { allowRecovery, downloadsPaused: this.#downloadsPaused });
  }

  async #pushLocked(signal?: AbortSignal, name = 'pushPending'): Promise<PushReport> {
    const { ctx } = await this.#gates(name, signal);
    if (this.#uploadsPaused) return { outcome: 'skipped_paused', conflictsResolved: 0 };
    return this.#live.during('push', () => this.#traced('push', () => pushPending(ctx, signal)));
  }

  pushPending(opts: OpOptions = {}): Promise<PushReport> {
    return this.#exclusive('pushPending', () => this.#pushLocked(opts.signal), opts.signal);
  }

  async #pullLocked(signal?: AbortSignal, name = 'pullToStable'): Promise<PullReport> {
    const { ctx, gate } = await this.#gates(name, signal);
    if (gate.outboxRows > 0) {
      throw new ClientError(
        'OVERSYNC_CLIENT_PENDING_PUSH_REPLAY',
        'a frozen push must be replayed first: pushPending()',
        {
          details: { outboundCount: gate.outboxRows },
        },
      );
    }
    if (this.#downloadsPaused) {
      return { outcome: 'skipped_paused', bundlesApplied: 0, rowsApplied: 0, lastBundleSeqSeen: -1 };
    }
    return this.#live.during('pull', () =>
      this.#traced('pull', () => pullToStable(ctx, gate.att.lastBundleSeqSeen, signal)),
    );
  }

  pullToStable(opts: OpOptions = {}): Promise<PullReport> {
    return this.#exclusive('pullToStable', () => this.#pullLocked(opts.signal), opts.signal);
  }

  #statusLocked(signal?: AbortSignal): Promise<SyncStatus> {
    return this.#runner.read((db) => readSyncStatus(db, this.#attachment.connected), signal);
  }

  readStatus(opts: OpOptions = {}): Promise<SyncStatus> {
    return this.#exclusive(
      'readStatus',
      async () => {
        this.#attachment.requireOpen('readStatus');
        return this.#statusLocked(opts.signal);
      },
      opts.signal,
    );
  }

  async #syncLocked(signal?: AbortSignal): Promise<SyncReport> {
    return this.#traced('sync', async () => {
      // Push and pull each check the binding on their own read; only when both are paused is
      // there nothing else to check it.
      if (this.#uploadsPaused && this.#downloadsPaused)
        await this.#attachment.requireConnected('sync', signal);
      else this.#attachment.requireAttachedHere('sync');
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
        await this.#attachment.requireConnected('syncThenDetach', signal);
        let lastSync: SyncReport | undefined;
        let detach: DetachResult = { outcome: 'blocked_unsynced_data', pendingRowCount: 0 };
        let rounds = 0;
        let prev = Number.POSITIVE_INFINITY;
        for (; rounds < 3; ) {
          lastSync = await this.#syncLocked(signal);
          rounds++;
          detach = await this.#attachment.detach(false, signal);
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
          const { ctx, gate } = await this.#gates('rebuild', signal, true);
          if (this.#downloadsPaused) return { outcome: 'skipped_paused' } as const;
          return this.#live.during('pull', () =>
            gate.op.kind === 'source_recovery'
              ? recoverSource(ctx, gate.op, signal)
              : keepSourceRebuild(ctx, 'hydrate', signal),
          );
        }),
      signal,
    );
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
  writeTransaction<T>(fn: (db: SqliteDb) => T, opts: OpOptions = {}): Promise<T> {
    if (this.#closed)
      return Promise.reject(new ClientError('OVERSYNC_CLIENT_CLOSED', 'writeTransaction: client is closed'));
    return this.#runner.appWrite(fn, opts.signal).then((v) => {
      this.#bg?.wakeUpload();
      return v;
    });
  }
  notifyLocalChange(tables?: readonly string[]): void {
    this.#bg?.wakeUpload();
    this.#live.localChange(tables);
  }

  readonly watch = ((
    sql: string,
    params?: WatchParams,
    options: WatchOptions & Partial<WatchHandlers<unknown>> = {},
  ) => watchLive(() => this.#live.source(), sql, params, options)) as SyncClient['watch'];

  start(opts: OpOptions = {}): void {
    if (this.#closed) throw new ClientError('OVERSYNC_CLIENT_CLOSED', 'start: client is closed');
    if (this.#bg) return;
    this.#bg = new BackgroundSync(
      {
        canUpload: () => this.#attachment.connected && !this.#uploadsPaused,
        canDownload: () => this.#attachment.connected && !this.#downloadsPaused,
        closed: () => this.#closed,
        pushIfPending: (signal) =>
          this.#exclusive(
            'pushPending',
            async () => {
              const pending = await this.#pendingLocked(signal);
              if (pending.dirtyRows + pending.outboxRows > 0) await this.#pushLocked(signal);
            },
            signal,
          ),
        pull: (signal) => this.#exclusive('pullToStable', () => this.#pullLocked(signal), signal),
        error: (error, loop) => {
          this.#live.failed(error, loop === 'upload' ? 'push' : 'pull');
          this.#emit('error', { error, loop });
        },
      },
      this.options,
      this.#runner,
      this.#remote,
      opts.signal,
    );
  }

  async stop(): Promise<void> {
    const bg = this.#bg;
    if (!bg) return;
    this.#bg = undefined;
    await bg.stop(new ClientError('OVERSYNC_CLIENT_CLOSED', 'background sync stopped'));
  }

  uninstall(opts: OpOptions = {}): Promise<void> {
    return this.#exclusive(
      'uninstall',
      async () => {
        this.#attachment.requireOpen('uninstall');
        await this.stop();
        await this.#attachment.uninstall(opts.signal);
        await this.#release();
      },
      opts.signal,
    );
  }

  async #release(): Promise<void> {
    this.#closed = true;
    this.#attachment.release();
    this.#live.close();
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
