/**
 * `createDbProxy` and `ProxyMember`, this process's member of the group of processes sharing one
 * database file: its lifecycle (start, close), its role, and the calls, which it routes to the
 * primary (internal/primary.ts), the write retries (internal/write-retries.ts), the local reader
 * (internal/local-reader.ts) and the change feed (internal/change-feed.ts). The election, which
 * decides the role, lives in internal/election-loop.ts.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { Emitter, sleep, throwIfAborted } from '@x/core';
import type { SqliteDatabase } from '@x/writecoordinator';
import { EXCLUSIVE_CHANNEL, ROLE_CHANNEL, WRITE_CHANNEL } from './channels.js';
import { DbProxyError, isDbProxyError, wireError } from './errors.js';
import { ChangeFeed } from './internal/change-feed.js';
import { DeadlineQueue } from './internal/deadline-queue.js';
import { ElectionLoop } from './internal/election-loop.js';
import { runExclusiveOn } from './internal/exclusive.js';
import { LocalReader } from './internal/local-reader.js';
import { MethodStatsTable } from './internal/method-stats.js';
import { checkCallOptions, checkWriteCall } from './internal/write-input.js';
import { type WriteRoute, writeWithRetries } from './internal/write-retries.js';
import { type DbProxyOptions, parseOptions, type ResolvedDbProxyOptions } from './options.js';
import {
  type ChangeEvent,
  type DbProxy,
  type DbProxyMetrics,
  EXCLUSIVE_METRICS_KEY,
  type ExclusiveOptions,
  type ReadOptions,
  type Role,
  type RoleChange,
  type WriteOptions,
  type WriteResult,
} from './types.js';

const writeTrace = diagnostics_channel.tracingChannel(WRITE_CHANNEL);
const exclusiveTrace = diagnostics_channel.tracingChannel(EXCLUSIVE_CHANNEL);
const roleChannel = diagnostics_channel.channel(ROLE_CHANNEL);

/**
 * @example
 * ```ts
 * import { createDbProxy, defineWrite } from '@x/dbproxy';
 * import { z } from 'zod';
 *
 * // Run this in as many processes as you like: one becomes primary, the others forward their writes.
 * const proxy = createDbProxy({
 *   databasePath: './kv.db',
 *   migrate: (db) => db.exec('CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)'),
 *   writes: {
 *     put: defineWrite({
 *       params: z.object({ k: z.string(), v: z.string() }),
 *       handler: (db, p) => db.prepare('INSERT OR REPLACE INTO kv VALUES (?, ?)').run(p.k, p.v).changes,
 *     }),
 *   },
 * });
 * const { seq } = await proxy.write('put', { k: 'a', v: '1' });
 * const row = await proxy.read((db) => db.prepare('SELECT v FROM kv WHERE k = ?').get('a'), { minSeq: seq });
 * console.log(proxy.role, row);
 * await proxy.close();
 * ```
 */
export function createDbProxy(options: DbProxyOptions): DbProxy {
  return new ProxyMember(parseOptions(options));
}

/** One process's member of the group: its lifecycle and role, and the calls (see the file header). */
class ProxyMember implements DbProxy {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly #log: ResolvedDbProxyOptions['logger'];
  #role: Role = 'starting';
  #started: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #closed = false;
  readonly #stop = new AbortController();

  readonly #election: ElectionLoop;
  #reader: LocalReader | null = null;

  /** Emitted whenever the role, the link or the primary changes. */
  readonly #stateChanged = new Emitter<{ changed: undefined }>();
  /** Emitted whenever a write of this process settles. */
  readonly #slotFreed = new Emitter<{ changed: undefined }>();
  readonly #roleListeners: Emitter<{ role: RoleChange }>;
  readonly #feed: ChangeFeed;
  readonly #route: WriteRoute;
  #ownSeq = 0;

  #inFlight = 0;
  #retries = 0;
  readonly #served = { requests: 0, errors: 0 };
  readonly #stats: MethodStatsTable;

  constructor(options: Readonly<ResolvedDbProxyOptions>) {
    this.options = options;
    this.#log = options.logger;
    this.#stats = new MethodStatsTable(options.writes);
    this.#roleListeners = new Emitter({
      onListenerError: (err) => this.#log.error({ err }, 'dbproxy: role listener threw'),
    });
    this.#feed = new ChangeFeed(
      options.logger,
      () => this.#election.link,
      () => this.#role === 'secondary',
    );
    this.#election = new ElectionLoop({
      options,
      feed: this.#feed,
      served: this.#served,
      stateChanged: this.#stateChanged,
      stopped: this.#stop.signal,
      role: () => this.#role,
      setRole: (role) => this.#setRole(role),
    });
    this.#route = {
      options,
      primary: () => (this.#role === 'primary' ? this.#election.primary : null),
      link: () => this.#election.link,
      closed: () => this.#closed,
      closedError: () => this.#closedError(),
      stateChanged: this.#stateChanged,
      deadlines: new DeadlineQueue(),
      countRetry: () => {
        this.#retries++;
      },
    };
  }

  get role(): Role {
    return this.#role;
  }

  get epoch(): number {
    return this.#election.epoch;
  }

  get instanceId(): string {
    return this.options.instanceId;
  }

  get lastWriteSeq(): number {
    return this.#ownSeq;
  }

  // ---------------------------------------------------------------- lifecycle

  start(opts: { signal?: AbortSignal } = {}): Promise<void> {
    if (opts.signal?.aborted) return Promise.reject(opts.signal.reason);
    if (this.#closing !== null) return Promise.reject(this.#closedError());
    if (this.#started === null) {
      this.#started = this.#start().catch((e) => {
        this.#started = null; // a failed start may be retried
        throw e;
      });
    }
    if (opts.signal === undefined) return this.#started;
    const signal = opts.signal;
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      this.#started!.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  async #start(): Promise<void> {
    const dbPath = this.#election.resolvePaths();
    this.#reader ??= new LocalReader(dbPath, this.options.readBusyTimeoutMs);
    const reader = this.#reader;
    await this.#election.start(() => reader.committedSeqNow());
  }

  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    // 1. stop intake: new writes fail CLOSED, the election loop stops
    this.#stop.abort(this.#closedError());
    await this.#started?.catch(() => {});
    if (this.#election.primary === null) {
      // secondary: let outstanding writes settle (bounded), then drop the link
      const until = Date.now() + this.options.drainTimeoutMs;
      while (this.#inFlight > 0 && Date.now() < until) {
        await sleep(until - Date.now(), { wake: (wakeUp) => this.#slotFreed.once('changed', wakeUp) });
      }
      this.#election.dropLink('closing');
    }
    // 2.-5.: a promotion under way finishes, the primary shuts down, the election is released last
    await this.#election.close(this.options.drainTimeoutMs);
    this.#reader?.close();
    this.#reader = null;
    this.#feed.end();
    this.#closed = true;
    this.#stateChanged.emit('changed', undefined);
    this.#setRole('closed');
  }

  #closedError(): DbProxyError {
    return new DbProxyError('DBPROXY_CLOSED', 'the proxy is closed');
  }

  #setRole(role: Role): void {
    const previous = this.#role;
    if (previous === role) return;
    this.#role = role;
    const e: RoleChange = { role, previous, epoch: this.#election.epoch };
    this.#log.info({ ...e, instanceId: this.options.instanceId }, `dbproxy: role ${role}`);
    if (roleChannel.hasSubscribers) roleChannel.publish({ ...e, instanceId: this.options.instanceId });
    this.#roleListeners.emit('role', e);
    this.#stateChanged.emit('changed', undefined);
  }

  onRoleChange(listener: (e: RoleChange) => void): () => void {
    return this.#roleListeners.on('role', listener);
  }

  // ---------------------------------------------------------------- calls

  write<T = unknown>(method: string, params: unknown, opts: WriteOptions = {}): Promise<WriteResult<T>> {
    if (!writeTrace.hasSubscribers) return this.#write<T>(method, params, opts);
    return writeTrace.tracePromise(() => this.#write<T>(method, params, opts), {
      method,
      requestId: opts.requestId,
    });
  }

  async #write<T>(method: string, params: unknown, opts: WriteOptions): Promise<WriteResult<T>> {
    throwIfAborted(opts.signal);
    if (this.#closing !== null) throw this.#closedError();
    // Every value the caller passed, checked here with the rules the primary applies: a bad one is
    // refused at once and never reaches a link or a batch shared with other callers.
    const write = checkWriteCall(this.options.writes, method, params, opts);
    if (this.#role === 'starting') await this.start(opts.signal === undefined ? {} : { signal: opts.signal });
    // Bounded in-flight writes per process: beyond maxInFlight a write waits for a slot.
    while (this.#inFlight >= this.options.maxInFlight) {
      await sleep(this.options.timeouts.defaultMs, {
        signal: opts.signal,
        wake: (wakeUp) => this.#slotFreed.once('changed', wakeUp),
      });
      if (this.#closing !== null) throw this.#closedError();
    }
    const stats = this.#stats.for(method);
    stats.count++;
    const t0 = performance.now();
    this.#inFlight++;
    try {
      const r = await writeWithRetries<T>(this.#route, write, opts);
      stats.ok++;
      if (r.seq > this.#ownSeq) this.#ownSeq = r.seq;
      return r;
    } catch (e) {
      stats.fail(isDbProxyError(e) ? e.code : 'ABORTED');
      throw e;
    } finally {
      this.#inFlight--;
      this.#slotFreed.emit('changed', undefined);
      stats.latency.record(performance.now() - t0);
    }
  }

  runExclusive<T>(fn: (db: SqliteDatabase) => T, opts: ExclusiveOptions = {}): Promise<WriteResult<T>> {
    if (!exclusiveTrace.hasSubscribers) return this.#runExclusive(fn, opts);
    return exclusiveTrace.tracePromise(() => this.#runExclusive(fn, opts), { requestId: opts.requestId });
  }

  async #runExclusive<T>(fn: (db: SqliteDatabase) => T, opts: ExclusiveOptions): Promise<WriteResult<T>> {
    throwIfAborted(opts.signal);
    checkCallOptions(opts);
    if (typeof fn !== 'function') {
      throw new DbProxyError('DBPROXY_INVALID_ARGUMENT', 'runExclusive takes a function', {
        details: { argument: 'fn' },
      });
    }
    if (this.#closing !== null) throw this.#closedError();
    if (this.#role === 'starting') await this.start(opts.signal === undefined ? {} : { signal: opts.signal });
    const p = this.#election.primary;
    if (this.#role !== 'primary' || p === null) {
      if (this.#closing !== null) throw this.#closedError();
      throw new DbProxyError('DBPROXY_NOT_PRIMARY', 'runExclusive runs only on the primary', {
        details: { role: this.#role, epoch: this.#election.epoch },
      });
    }
    if (!p.accepting) throw wireError('SHUTTING_DOWN', 'the proxy is closing');
    const deadline = Date.now() + (opts.timeoutMs ?? this.options.timeouts.longMs);
    const r = await runExclusiveOn(p, fn, opts, deadline, this.#stats.for(EXCLUSIVE_METRICS_KEY));
    if (r.seq > this.#ownSeq) this.#ownSeq = r.seq;
    return r;
  }

  async read<T>(fn: (db: SqliteDatabase) => T, opts: ReadOptions = {}): Promise<T> {
    throwIfAborted(opts.signal);
    checkCallOptions(opts);
    if (this.#closing !== null) throw this.#closedError();
    await this.start(opts.signal === undefined ? {} : { signal: opts.signal });
    const reader = this.#reader;
    if (reader === null) throw this.#closedError();
    return reader.read(
      fn,
      opts.minSeq ?? this.#ownSeq,
      opts.timeoutMs ?? this.options.timeouts.defaultMs,
      opts.signal,
      this.#feed.seqAdvanced,
      () => (this.#closing !== null ? this.#closedError() : null),
    );
  }

  changes(opts: { signal?: AbortSignal } = {}): AsyncIterable<ChangeEvent> {
    // Never throws: an aborted signal or a closed proxy fails the iterator's first next().
    const stream = this.#feed.open(this.options.changesBufferSize, opts.signal);
    if (this.#closing !== null) {
      stream.fail(this.#closedError());
      return stream;
    }
    if (this.#role === 'starting') this.start().catch((e) => stream.fail(e));
    return stream;
  }

  metrics(): DbProxyMetrics {
    return {
      role: this.#role,
      epoch: this.#election.epoch,
      instanceId: this.options.instanceId,
      inFlight: this.#inFlight,
      retries: this.#retries,
      failovers: this.#election.failovers,
      promotions: this.#election.promotions,
      stalledPrimariesEnded: this.#election.stalledEnded,
      seq: this.#feed.deliveredSeq ?? 0,
      methods: this.#stats.snapshot(),
      served: { requests: this.#served.requests, errors: this.#served.errors },
      coordinator: this.#election.primary?.coordinator.metrics() ?? null,
    };
  }
}
