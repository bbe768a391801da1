import { type TracingChannel, tracingChannel } from 'node:diagnostics_channel';
import { sleep } from '@x/core';
import type {
  Bundle,
  CapabilitiesResponse,
  CommittedBundleRowsResponse,
  ConnectRequest,
  ConnectResponse,
  Lifecycle,
  PullResponse,
  PushBundleRequest,
  PushBundleResponse,
  PushSessionChunkRequest,
  PushSessionChunkResponse,
  PushSessionCommitResponse,
  PushSessionCreateRequest,
  PushSessionCreateResponse,
  SnapshotChunkResponse,
  SnapshotSession,
  SnapshotSessionCreateRequest,
  StatusResponse,
} from '../shared/wire.js';
import type { Actor } from './actor.js';
import type { BundleChangeSubscription } from './bundle-change-subscription.js';
import type { DiscoveredSchema } from './discovered-schema.js';
import { SyncServerError, wireError } from './errors.js';
import { assertBootstrapped, bootstrapTopology } from './internal/bootstrap.js';
import { connect } from './internal/connect.js';
import { type BackgroundTasks, boundedTx, type ServiceContext } from './internal/context.js';
import { sqlErrorOf } from './internal/db.js';
import { checkActor as checkIdentity, SERVICE_ACTOR_NAMING } from './internal/identity.js';
import { getCommittedBundleRows, pull } from './internal/pull.js';
import { pushBundle } from './internal/push-bundle.js';
import { uploadPushChunk } from './internal/push-chunk.js';
import { commitPushSession } from './internal/push-commit.js';
import { createPushSession, deletePushSession } from './internal/push-session.js';
import { execScopeWrite, withinSyncBundle } from './internal/server-writes.js';
import { createSnapshotSession, deleteSnapshotSession, getSnapshotChunk } from './internal/snapshot.js';
import { requireInitializedScopeReadOnly } from './internal/state.js';
import { capabilities, status } from './internal/status.js';
import type { Topology } from './internal/topology.js';
import { BundleChangeHub } from './internal/watch.js';
import {
  DEFAULT_BUNDLES_PER_PULL,
  type ResolvedSyncServiceOptions,
  resolveSyncServiceOptions,
  SILENT_LOGGER,
  type SyncServiceOptions,
} from './options.js';
import type { PullParams } from './pull-params.js';
import { parsePayloads, RawJson } from './raw-json.js';
import type { BundleSource, BundleWriteFn, ScopeWriteResult } from './server-writes.js';

/** Writes into a scope from the server side (go-oversync's ScopeManager). */
export interface ScopeManager {
  /**
   * Runs `fn` as one bundle of writer `opts.writerId` in scope `scopeId`, initializing the scope
   * first when no device has; its writes reach every device of the scope on its next pull.
   */
  execWrite(
    scopeId: string,
    opts: { writerId: string },
    fn: BundleWriteFn,
    signal?: OpOptions,
  ): Promise<ScopeWriteResult>;
}

/** Per-call options of the service's operations. */
export interface OpOptions {
  signal?: AbortSignal | undefined;
  /**
   * Row payloads stay `RawJson` (their JSON text, embedded verbatim by the HTTP layer) instead of
   * being parsed. Only pull, committed-bundle rows and snapshot chunks honour it.
   */
  rawPayloads?: boolean;
}

/** Options of {@link SyncService.close}. */
export interface CloseOptions {
  /** Abort in-flight operations after this long (default `options.closeTimeoutMs`). */
  drainTimeoutMs?: number;
  signal?: AbortSignal;
}

/** The sync service: go-oversync v1 semantics on PostgreSQL through an `@x/dbx` cluster. */
export interface SyncService {
  readonly options: ResolvedSyncServiceOptions;
  readonly lifecycle: Lifecycle;
  readonly inflightOperations: number;
  /** FK-derived table order, cycles and dependencies (after `bootstrap()`). */
  readonly discoveredSchema: DiscoveredSchema | undefined;
  /** Creates / validates the `sync` schema, validates registered tables, installs triggers. Memoised. */
  bootstrap(opts?: OpOptions): Promise<void>;
  /** `POST /sync/connect`: how the actor's device joins its scope (see `ConnectResolution`). */
  connect(actor: Actor, req: ConnectRequest, opts?: OpOptions): Promise<ConnectResponse>;
  /** `POST /sync/push-sessions`: opens a session for one source bundle (or reports it already committed). */
  createPushSession(
    actor: Actor,
    req: PushSessionCreateRequest,
    opts?: OpOptions,
  ): Promise<PushSessionCreateResponse>;
  /** `POST /sync/push-sessions/{push_id}/chunks`: stages the next rows of a push session. */
  uploadPushChunk(
    actor: Actor,
    pushId: string,
    req: PushSessionChunkRequest,
    opts?: OpOptions,
  ): Promise<PushSessionChunkResponse>;
  /** `POST /sync/push-sessions/{push_id}/commit`: commits the staged rows as one bundle (or conflicts). */
  commitPushSession(actor: Actor, pushId: string, opts?: OpOptions): Promise<PushSessionCommitResponse>;
  /**
   * `POST /sync/push` (feature `single_request_push`): creates, uploads and commits a bundle of at
   * most `max_rows_per_push_chunk` rows in one request, with the push session's rules and errors.
   */
  pushBundle(actor: Actor, req: PushBundleRequest, opts?: OpOptions): Promise<PushBundleResponse>;
  /** `DELETE /sync/push-sessions/{push_id}`: drops a push session and its staged rows. */
  deletePushSession(actor: Actor, pushId: string, opts?: OpOptions): Promise<void>;
  /** `GET /sync/pull`: committed bundles after `params.afterBundleSeq`, up to the stable point. */
  pull(actor: Actor, params: Partial<PullParams>, opts?: OpOptions): Promise<PullResponse>;
  /** `GET /sync/committed-bundles/{bundle_seq}/rows`: one page of a committed bundle's rows. */
  getCommittedBundleRows(
    actor: Actor,
    bundleSeq: number,
    page?: { afterRowOrdinal?: number | undefined; maxRows?: number | undefined },
    opts?: OpOptions,
  ): Promise<CommittedBundleRowsResponse>;
  /** `POST /sync/snapshot-sessions`: freezes the scope's live rows for chunked reading. */
  createSnapshotSession(
    actor: Actor,
    req?: SnapshotSessionCreateRequest,
    opts?: OpOptions,
  ): Promise<SnapshotSession>;
  /** `GET /sync/snapshot-sessions/{snapshot_id}`: one page of a snapshot session's rows. */
  getSnapshotChunk(
    actor: Actor,
    snapshotId: string,
    page?: { afterRowOrdinal?: number | undefined; maxRows?: number | undefined },
    opts?: OpOptions,
  ): Promise<SnapshotChunkResponse>;
  /** `DELETE /sync/snapshot-sessions/{snapshot_id}`: drops a snapshot session. */
  deleteSnapshotSession(actor: Actor, snapshotId: string, opts?: OpOptions): Promise<void>;
  /**
   * Runs `fn` as bundle `source` of `actor.userId`'s (INITIALIZED) scope; its writes reach clients
   * on their next pull. Resolves to the committed bundle, or null when `fn` changed nothing.
   */
  withinSyncBundle(
    actor: { userId: string },
    source: BundleSource,
    fn: BundleWriteFn,
    opts?: OpOptions,
  ): Promise<Bundle | null>;
  /** The scope manager: server writes that initialise an UNINITIALIZED scope when needed. */
  scopeManager(): ScopeManager;
  /**
   * Subscribes to committed-bundle events of the actor's scope (`GET /sync/watch`); an event for
   * the latest bundle is delivered at once when it is newer than `afterBundleSeq`.
   */
  watchBundleChanges(
    actor: Actor,
    params: { afterBundleSeq: number },
    opts?: OpOptions,
  ): Promise<BundleChangeSubscription>;
  /** Starts the watch LISTEN connection if needed and resolves once it listens (no-op when watch is off). */
  bundleChangeListenerReady(timeoutMs?: number): Promise<void>;
  /** Open watch subscriptions in this process (diagnostics). */
  bundleChangeSubscriberCount(): number;
  /** `watchAllowed: false` reports `bundle_change_watch: false` (an actor refused by the watch policy). */
  capabilities(opts?: { watchAllowed?: boolean }): CapabilitiesResponse;
  /** `GET /syncx/status`: health, lifecycle and retention counters. */
  status(opts?: OpOptions): Promise<StatusResponse>;
  /** Stops intake (503 `service_unavailable`), drains in-flight operations, then aborts stragglers. Idempotent. */
  close(opts?: CloseOptions): Promise<void>;
  /** `close()` with its defaults, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const traces = new Map<string, TracingChannel<string, { operation: string }>>();
/** The tracing channel `x:oversync:<operation>`, made once per operation (not per call). */
function traceOf(operation: string): TracingChannel<string, { operation: string }> {
  let t = traces.get(operation);
  if (t === undefined) {
    t = tracingChannel<string, { operation: string }>(`x:oversync:${operation}`);
    traces.set(operation, t);
  }
  return t;
}
export class SyncServiceImpl implements SyncService {
  readonly options: ResolvedSyncServiceOptions;
  #lifecycle: Lifecycle = 'running';
  #inflight = 0;
  #drainWaiters: Array<() => void> = [];
  #abortAll = new AbortController();
  #topology: Topology | undefined;
  #bootstrapping: Promise<void> | undefined;
  #closing: Promise<void> | undefined;
  #hub: BundleChangeHub | undefined;
  readonly logger;

  constructor(options: SyncServiceOptions) {
    this.options = resolveSyncServiceOptions(options);
    this.logger = this.options.logger ?? SILENT_LOGGER;
  }

  get lifecycle(): Lifecycle {
    return this.#lifecycle;
  }
  get inflightOperations(): number {
    return this.#inflight;
  }
  get discoveredSchema(): DiscoveredSchema | undefined {
    return this.#topology?.discovered;
  }

  /** @internal */
  get context(): ServiceContext {
    const topology = assertBootstrapped(this.#topology);
    return {
      db: this.options.db,
      options: this.options,
      topology,
      logger: this.logger,
      notifyChannel: this.options.bundleChangeWatch.enabled
        ? this.options.bundleChangeWatch.notifyChannel
        : undefined,
      background: this.#background,
    };
  }

  /** Background tasks count as in-flight operations: close() drains, then aborts them. */
  #backgroundByName = new Map<string, number>();
  #background: BackgroundTasks = {
    start: (name, task) => {
      this.#inflight++;
      this.#backgroundByName.set(name, (this.#backgroundByName.get(name) ?? 0) + 1);
      void task(this.#abortAll.signal)
        .catch((e: unknown) =>
          this.logger.error({ err: e, operation: name }, 'oversync background task failed'),
        )
        .finally(() => {
          this.#backgroundByName.set(name, (this.#backgroundByName.get(name) ?? 1) - 1);
          this.#inflight--;
          if (this.#inflight === 0) for (const w of this.#drainWaiters.splice(0)) w();
        });
    },
    running: (name) => this.#backgroundByName.get(name) ?? 0,
  };

  bootstrap(opts: OpOptions = {}): Promise<void> {
    if (this.#lifecycle !== 'running')
      return Promise.reject(wireError('service_unavailable', 'Sync service is shutting down'));
    this.#bootstrapping ??= bootstrapTopology(
      this.options.db,
      this.options.registeredTables,
      this.options.dependencyOverrides,
      this.logger,
      opts.signal,
      {
        notifyChannel: this.options.bundleChangeWatch.enabled
          ? this.options.bundleChangeWatch.notifyChannel
          : undefined,
        retainedBundlesPerUser: this.options.limits.retainedBundlesPerUser,
        retentionPruneBatchSize: this.options.limits.retentionPruneBatchSize,
      },
    ).then(
      (t) => {
        this.#topology = t;
      },
      (e: unknown) => {
        this.#bootstrapping = undefined; // a failed bootstrap can be retried
        throw e;
      },
    );
    return this.#bootstrapping;
  }

  /**
   * Runs one counted operation: refused with 503 once closing started, counted while in flight,
   * traced on `x:oversync:<name>`, aborted by the caller's signal or by close() after its deadline.
   */
  async run<T>(
    name: string,
    opts: OpOptions | undefined,
    fn: (ctx: ServiceContext, signal: AbortSignal) => Promise<T>,
  ) {
    opts?.signal?.throwIfAborted();
    if (this.#lifecycle !== 'running')
      throw wireError('service_unavailable', 'Sync service is shutting down');
    const ctx = this.context;
    this.#inflight++;
    const signal = opts?.signal
      ? AbortSignal.any([opts.signal, this.#abortAll.signal])
      : this.#abortAll.signal;
    try {
      return await traceOf(name).tracePromise(() => fn(ctx, signal), { operation: name });
    } catch (e) {
      // A statement cut by the request statement timeout (see boundedTx), not by our own abort.
      if (!signal.aborted && sqlErrorOf(e)?.code === QUERY_CANCELED) {
        throw wireError('service_unavailable', `${name} exceeded the request statement timeout`, {
          cause: e,
          retryable: true,
        });
      }
      throw e;
    } finally {
      this.#inflight--;
      if (this.#inflight === 0) for (const w of this.#drainWaiters.splice(0)) w();
    }
  }

  connect(actor: Actor, req: ConnectRequest, opts?: OpOptions) {
    return this.run('connect', opts, (ctx, signal) => connect(ctx, checkActor(actor), req, { signal }));
  }
  createPushSession(actor: Actor, req: PushSessionCreateRequest, opts?: OpOptions) {
    return this.run('push.create', opts, (ctx, signal) =>
      createPushSession(ctx, checkActor(actor), req, { signal }),
    );
  }
  uploadPushChunk(actor: Actor, pushId: string, req: PushSessionChunkRequest, opts?: OpOptions) {
    return this.run('push.chunk', opts, (ctx, signal) =>
      uploadPushChunk(ctx, checkActor(actor), pushId, req, { signal }),
    );
  }
  commitPushSession(actor: Actor, pushId: string, opts?: OpOptions) {
    return this.run('push.commit', opts, (ctx, signal) =>
      commitPushSession(ctx, checkActor(actor), pushId, { signal }),
    );
  }
  pushBundle(actor: Actor, req: PushBundleRequest, opts?: OpOptions) {
    return this.run('push.bundle', opts, (ctx, signal) =>
      pushBundle(ctx, checkActor(actor), req, { signal }),
    );
  }
  deletePushSession(actor: Actor, pushId: string, opts?: OpOptions) {
    return this.run('push.delete', opts, (ctx, signal) =>
      deletePushSession(ctx, checkActor(actor), pushId, { signal }),
    );
  }
  pull(actor: Actor, params: Partial<PullParams>, opts?: OpOptions) {
    const p: PullParams = {
      afterBundleSeq: params.afterBundleSeq ?? 0,
      maxBundles: params.maxBundles ?? DEFAULT_BUNDLES_PER_PULL,
      targetBundleSeq: params.targetBundleSeq ?? 0,
    };
    return this.run('pull', opts, async (ctx, signal) => {
      const res = await pull(ctx, checkActor(actor), p, { signal });
      if (!opts?.rawPayloads) for (const b of res.bundles) parsePayloads(b.rows);
      return res;
    });
  }
  getCommittedBundleRows(
    actor: Actor,
    bundleSeq: number,
    page: { afterRowOrdinal?: number | undefined; maxRows?: number | undefined } = {},
    opts?: OpOptions,
  ) {
    const maxRows = page.maxRows ?? this.options.limits.defaultRowsPerCommittedBundleChunk;
    return this.run('committed-rows', opts, async (ctx, signal) => {
      const res = await getCommittedBundleRows(
        ctx,
        checkActor(actor),
        bundleSeq,
        page.afterRowOrdinal,
        maxRows,
        {
          signal,
        },
      );
      if (!opts?.rawPayloads) parsePayloads(res.rows);
      return res;
    });
  }
  createSnapshotSession(actor: Actor, req: SnapshotSessionCreateRequest = {}, opts?: OpOptions) {
    return this.run('snapshot.create', opts, (ctx, signal) =>
      createSnapshotSession(ctx, checkActor(actor), req, { signal }),
    );
  }
  getSnapshotChunk(
    actor: Actor,
    snapshotId: string,
    page: { afterRowOrdinal?: number | undefined; maxRows?: number | undefined } = {},
    opts?: OpOptions,
  ) {
    const maxRows = page.maxRows ?? this.options.limits.defaultRowsPerSnapshotChunk;
    return this.run('snapshot.chunk', opts, async (ctx, signal) => {
      const res = await getSnapshotChunk(
        ctx,
        checkActor(actor),
        snapshotId,
        page.afterRowOrdinal ?? 0,
        maxRows,
        {
          signal,
        },
      );
      if (!opts?.rawPayloads && res.rows instanceof RawJson)
        res.rows = JSON.parse(res.rows.text) as typeof res.rows;
      return res;
    });
  }
  deleteSnapshotSession(actor: Actor, snapshotId: string, opts?: OpOptions) {
    return this.run('snapshot.delete', opts, (ctx, signal) =>
      deleteSnapshotSession(ctx, checkActor(actor), snapshotId, { signal }),
    );
  }
  withinSyncBundle(actor: { userId: string }, source: BundleSource, fn: BundleWriteFn, opts?: OpOptions) {
    return this.run('within-sync-bundle', opts, (ctx, signal) =>
      withinSyncBundle(ctx, actor, source, fn, { signal }),
    );
  }
  scopeManager(): ScopeManager {
    return {
      execWrite: (scopeId, o, fn, opts) =>
        this.run('scope.exec-write', opts, (ctx, signal) =>
          execScopeWrite(ctx, scopeId, o?.writerId, fn, { signal }),
        ),
    };
  }
  async watchBundleChanges(actor: Actor, params: { afterBundleSeq: number }, opts?: OpOptions) {
    const w = this.options.bundleChangeWatch;
    if (!w.enabled) throw wireError('bundle_change_watch_disabled', 'Bundle change watch is disabled');
    return this.run('watch.subscribe', opts, async (ctx, signal) => {
      const a = checkActor(actor);
      this.#hub ??= new BundleChangeHub(ctx.db, w.notifyChannel, this.logger);
      const hub = this.#hub;
      return boundedTx(
        ctx,
        async (tx) => {
          const userPk = await requireInitializedScopeReadOnly(tx, a.userId);
          const sub = hub.subscribe(userPk, params.afterBundleSeq);
          const r = await tx.query<{ seq: string }>(
            'SELECT (next_bundle_seq - 1)::text AS seq FROM sync.user_state WHERE user_pk = $1',
            [userPk],
          );
          sub.publish({ bundle_seq: Number(r.rows[0]?.seq ?? 0) });
          return sub;
        },
        { isolation: 'read committed', readOnly: true, signal },
      );
    });
  }
  /** Resolves once the watch listener is LISTENing (starts it if needed). */
  async bundleChangeListenerReady(timeoutMs?: number): Promise<void> {
    const w = this.options.bundleChangeWatch;
    if (!w.enabled) return;
    this.#hub ??= new BundleChangeHub(this.context.db, w.notifyChannel, this.logger);
    await this.#hub.ready(timeoutMs);
  }
  /** Number of open watch subscriptions (diagnostics). */
  bundleChangeSubscriberCount(): number {
    return this.#hub?.subscriberCount() ?? 0;
  }
  capabilities(opts: { watchAllowed?: boolean } = {}): CapabilitiesResponse {
    return capabilities(this.options, opts.watchAllowed ?? true);
  }
  status(opts: OpOptions = {}): Promise<StatusResponse> {
    return status(this.options.db, this.options, this.#lifecycle, this.#inflight, opts.signal);
  }

  close(opts: CloseOptions = {}): Promise<void> {
    this.#closing ??= this.#close(opts);
    return this.#closing;
  }

  async #close(opts: CloseOptions): Promise<void> {
    this.#lifecycle = 'shutting_down';
    const hubClosed = this.#hub?.close();
    if (this.#inflight > 0) {
      const drained = new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
      const timeoutMs = opts.drainTimeoutMs ?? this.options.closeTimeoutMs;
      // The drain ends at the deadline, or early when the caller's signal aborts.
      const stopWaiting = new AbortController();
      const signal = opts.signal ? AbortSignal.any([opts.signal, stopWaiting.signal]) : stopWaiting.signal;
      const deadline = sleep(timeoutMs, { signal, unref: true }).catch(() => undefined);
      await Promise.race([drained, deadline]);
      stopWaiting.abort();
      if (this.#inflight > 0) {
        this.#abortAll.abort(
          new SyncServerError('OVERSYNC_CLOSED', 'sync service closed before the operation finished'),
        );
        await drained;
      }
    }
    await hubClosed;
    this.#lifecycle = 'closed';
    this.logger.info({}, 'oversync sync service closed');
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** SQLSTATE of a statement cancelled by `statement_timeout` (or a cancel request). */
const QUERY_CANCELED = '57014';

/** The caller's actor, checked (identity.ts holds the one check, for HTTP too). */
export function checkActor(actor: Actor): Actor {
  return checkIdentity(actor?.userId, actor?.sourceId, SERVICE_ACTOR_NAMING);
}

/**
 * Creates the sync service over an `@x/dbx` cluster. The options are checked here
 * (OVERSYNC_INVALID_OPTIONS); nothing touches the database until `bootstrap()`, which creates or
 * checks the `sync` schema and installs the capture triggers of the registered tables. Serve it
 * over HTTP with {@link oversyncFastifyPlugin}, or call its operations directly.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSyncService } from '@x/oversync/server';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });
 * const sync = createSyncService({
 *   db,
 *   // owned by a user (`_sync_scope_id`), keyed by a uuid `id`
 *   registeredTables: [{ schema: 'business', table: 'users', syncKeyColumns: ['id'] }],
 *   bundleChangeWatch: { enabled: true },
 * });
 * await sync.bootstrap();
 *
 * // a server-side write: reaches every device of user-123 on its next pull
 * const written = await sync.scopeManager().execWrite('user-123', { writerId: 'importer' }, async (tx) => {
 *   await tx.query('INSERT INTO business.users (id, name) VALUES ($1, $2)', [crypto.randomUUID(), 'Ann']);
 * });
 * console.log('server write', written);
 *
 * await sync.close();
 * await db.close();
 * ```
 */
export function createSyncService(options: SyncServiceOptions): SyncService {
  return new SyncServiceImpl(options);
}
