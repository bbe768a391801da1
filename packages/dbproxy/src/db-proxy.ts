import diagnostics_channel from 'node:diagnostics_channel';
import { Emitter, sleep, throwIfAborted } from '@x/core';
import type { SqliteDatabase } from '@x/writecoordinator';
import {
  ELECTION_CHANNEL,
  type ElectionPhase,
  EXCLUSIVE_CHANNEL,
  ROLE_CHANNEL,
  WRITE_CHANNEL,
} from './channels.js';
import { DbProxyError, isDbProxyError, wireError } from './errors.js';
import { ChangeFeed } from './internal/change-feed.js';
import { DeadlineQueue } from './internal/deadline-queue.js';
import { type ElectionLock, lockPathFor, tryAcquireElectionLock } from './internal/election.js';
import { runExclusiveOn } from './internal/exclusive.js';
import { leasePathFor, readLease, startLease } from './internal/lease.js';
import { BYE_REASON, Link, REFUSED_REASON } from './internal/link.js';
import { LocalReader } from './internal/local-reader.js';
import { MethodStatsTable } from './internal/method-stats.js';
import { pidAlive } from './internal/pid.js';
import { Primary } from './internal/primary.js';
import {
  databaseKey,
  ensureRuntimeDir,
  infoPathFor,
  type PrimaryInfo,
  readPrimaryInfo,
  removeEndpointFiles,
  resolveDatabasePath,
} from './internal/runtime-dir.js';
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
const electionChannel = diagnostics_channel.channel(ELECTION_CHANNEL);

/** After losing its primary, a secondary retries the election this often ... */
const FAST_ELECTION_POLL_MS = 5;
/** ... for this long; then every `electionPollMs`. */
const FAST_ELECTION_WINDOW_MS = 1_000;

export function createDbProxy(options: DbProxyOptions): DbProxy {
  return new ProxyMember(parseOptions(options));
}

/**
 * Why this file is one piece (~580 lines): `ProxyMember` is the state machine of one process in
 * the group: its role, lock, lease, link, primary and epoch. Start, the election loop, following,
 * promotion and close each read and change all of these fields together; split across files they
 * would have to be exposed to each other. Everything that does not touch that state lives
 * elsewhere: the primary in internal/primary.ts, write retries in internal/write-retries.ts,
 * reads in internal/local-reader.ts, the change feed in internal/change-feed.ts.
 *
 * This process's member of the group of processes sharing one database file: its lifecycle and
 * role, the election (win the lock and promote, or follow the primary and take over when it is
 * gone), and the calls, which it routes to the primary (`Primary`), the write retries, the local
 * reader and the change feed.
 */
class ProxyMember implements DbProxy {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly #log: ResolvedDbProxyOptions['logger'];
  #role: Role = 'starting';
  #started: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #closed = false;
  readonly #stop = new AbortController();

  #dbPath = '';
  #runtimeDir = '';
  #key = '';
  #infoPath = '';
  #lockPath = '';
  #leasePath = '';
  /** The holder's lease beat while this process holds the election lock. */
  #lease: { stop(): Promise<void> } | null = null;
  /** As of the last election attempt: how long until the lock holder's lease counts as stalled. */
  #leaseStaleInMs = Number.POSITIVE_INFINITY;
  /** The epoch of the last lease seen: a new one means a promotion is under way. */
  #leaseEpoch = 0;

  #lock: ElectionLock | null = null;
  #primary: Primary | null = null;
  #link: Link | null = null;
  #epoch = 0;
  #retiredEpoch = 0;
  #reader: LocalReader | null = null;
  #supervisor: Promise<void> | null = null;

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
  #failovers = 0;
  #promotions = 0;
  #stalledEnded = 0;
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
      () => this.#link,
      () => this.#role === 'secondary',
    );
    this.#route = {
      options,
      primary: () => (this.#role === 'primary' ? this.#primary : null),
      link: () => this.#link,
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
    return this.#epoch;
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
    this.#runtimeDir = ensureRuntimeDir(this.options.runtimeDir);
    this.#dbPath = resolveDatabasePath(this.options.databasePath);
    this.#key = databaseKey(this.#dbPath);
    this.#infoPath = infoPathFor(this.#dbPath);
    this.#lockPath = lockPathFor(this.#dbPath);
    this.#leasePath = leasePathFor(this.#dbPath);
    this.#reader ??= new LocalReader(this.#dbPath, this.options.readBusyTimeoutMs);
    const lock = tryAcquireElectionLock(this.#lockPath);
    if (lock !== null) {
      try {
        await this.#promote(lock);
      } catch (e) {
        lock.release(); // never keep the election while unable to serve
        this.#lock = null;
        throw e;
      }
      return;
    }
    // Change events start after what the file holds now (0 for a file no primary created yet).
    this.#feed.deliveredSeq = this.#reader.committedSeqNow();
    this.#setRole('secondary');
    this.#supervisor = this.#supervise();
  }

  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    // 1. stop intake: new writes fail CLOSED, the supervisor stops electing
    this.#stop.abort(this.#closedError());
    await this.#started?.catch(() => {});
    if (this.#primary === null) {
      // secondary: let outstanding writes settle (bounded), then drop the link
      const until = Date.now() + this.options.drainTimeoutMs;
      while (this.#inFlight > 0 && Date.now() < until) {
        await sleep(until - Date.now(), { wake: (wakeUp) => this.#slotFreed.once('changed', wakeUp) });
      }
      this.#link?.markDown('closing');
    }
    // a promotion already under way finishes first, and is then shut down like any primary
    await this.#supervisor?.catch(() => {});
    const p = this.#primary;
    if (p !== null) {
      await p.close(this.options.drainTimeoutMs);
      this.#primary = null;
    }
    // 5. release the election last, so no successor starts while we still write; the lease beats
    //    until then, so nobody takes a slow close for a stall
    this.#lock?.release();
    this.#lock = null;
    await this.#lease?.stop();
    this.#lease = null;
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
    const e: RoleChange = { role, previous, epoch: this.#epoch };
    this.#log.info({ ...e, instanceId: this.options.instanceId }, `dbproxy: role ${role}`);
    if (roleChannel.hasSubscribers) roleChannel.publish({ ...e, instanceId: this.options.instanceId });
    this.#roleListeners.emit('role', e);
    this.#stateChanged.emit('changed', undefined);
  }

  #phase(phase: ElectionPhase, epoch: number, extra: Record<string, unknown> = {}): void {
    if (electionChannel.hasSubscribers)
      electionChannel.publish({ phase, epoch, instanceId: this.options.instanceId, ...extra });
  }

  onRoleChange(listener: (e: RoleChange) => void): () => void {
    return this.#roleListeners.on('role', listener);
  }

  // ---------------------------------------------------------------- election and promotion

  /** The secondary's loop: follow a live primary; whenever it is gone, try the lock, else find the next one. */
  async #supervise(): Promise<void> {
    const signal = this.#stop.signal;
    const poll = this.options.electionPollMs;
    // While no primary is known, for a short window the lock and the info file are retried every
    // few ms (a successor takes tens of ms to announce itself, and a loser that slept a whole poll
    // interval would add that to its failover); later, every electionPollMs.
    let leaderlessSince = Date.now();
    // An epoch whose endpoint refused us is dead; its info file may stay until the next primary
    // announces itself, so it is not tried again for a poll interval.
    let refused = { epoch: 0, until: 0 };
    let seenLeaseEpoch = this.#leaseEpoch;
    while (!signal.aborted && this.#role === 'secondary') {
      let lock: ElectionLock | null = null;
      try {
        lock = tryAcquireElectionLock(this.#lockPath);
      } catch (e) {
        this.#log.warn({ err: e }, 'dbproxy: election attempt failed');
      }
      if (signal.aborted) {
        lock?.release();
        return;
      }
      if (lock === null && this.#endStalledPrimary()) {
        // it dies at once (SIGKILL cannot be caught) and the OS drops its lock: try again soon
        await sleep(5, { signal }).catch(() => {});
        continue;
      }
      if (lock !== null) {
        try {
          await this.#promote(lock);
          return;
        } catch (e) {
          this.#log.error({ err: e }, 'dbproxy: promotion failed; releasing the lock');
          lock.release();
          this.#lock = null;
          this.#setRole('secondary');
        }
      }
      const info = readPrimaryInfo(this.#infoPath);
      if (
        info !== null &&
        info.dbPath === this.#dbPath &&
        info.epoch > this.#retiredEpoch &&
        !(info.epoch === refused.epoch && Date.now() < refused.until) &&
        pidAlive(info.pid)
      ) {
        const link = await this.#follow(info);
        if (link.downReason === REFUSED_REASON) refused = { epoch: info.epoch, until: Date.now() + poll };
        if (!link.isDown) {
          await new Promise<void>((resolve) => {
            const check = (): void => {
              if (link.isDown || signal.aborted) resolve();
              else this.#stateChanged.once('changed', check);
            };
            check();
          });
          if (this.#link === link) this.#link = null;
          // A primary that said bye is leaving; never follow that epoch again.
          if (link.downReason === BYE_REASON) this.#retiredEpoch = Math.max(this.#retiredEpoch, link.epoch);
          leaderlessSince = Date.now();
          continue; // the primary is gone or changed: try the lock at once
        }
      }
      if (this.#leaseEpoch !== seenLeaseEpoch) {
        // someone won the lock since (after a crash, or after ending a stalled primary): it will
        // announce itself within milliseconds
        seenLeaseEpoch = this.#leaseEpoch;
        leaderlessSince = Date.now();
      }
      const fast = Date.now() - leaderlessSince < FAST_ELECTION_WINDOW_MS;
      // no later than the moment the holder's lease would count as stalled
      const wait = Math.min(
        fast ? FAST_ELECTION_POLL_MS : poll / 2 + Math.random() * poll,
        this.#leaseStaleInMs + 1,
      );
      try {
        await sleep(wait, { signal });
      } catch {
        return;
      }
    }
  }

  /**
   * The lock is held by someone whose lease has been silent for longer than the stall timeout: the
   * holder is stopped (not merely busy, its beat comes from a worker thread). End it, so its lock is
   * released and it can never commit again (its coordinator is fenced by epoch as well). Returns
   * whether it sent the signal.
   */
  #endStalledPrimary(): boolean {
    const lease = readLease(this.#leasePath);
    this.#leaseStaleInMs = Number.POSITIVE_INFINITY;
    this.#leaseEpoch = lease?.epoch ?? this.#leaseEpoch;
    if (lease === null || lease.pid === process.pid) return false;
    if (lease.silentMs <= this.options.heartbeat.stallTimeoutMs) {
      this.#leaseStaleInMs = this.options.heartbeat.stallTimeoutMs - lease.silentMs;
      return false;
    }
    if (!pidAlive(lease.pid)) return false;
    this.#log.warn(
      { pid: lease.pid, epoch: lease.epoch, silentMs: Math.round(lease.silentMs) },
      'dbproxy: the primary has stalled; ending it to take over',
    );
    try {
      process.kill(lease.pid, 'SIGKILL');
      this.#stalledEnded++;
      return true;
    } catch (e) {
      this.#log.error({ err: e, pid: lease.pid }, 'dbproxy: could not end the stalled primary');
      return false;
    }
  }

  /** Connects to the primary `info` names; the link comes back down if that failed (see `downReason`). */
  async #follow(info: PrimaryInfo): Promise<Link> {
    const link = new Link(info, {
      heartbeatTimeoutMs: this.options.heartbeat.timeoutMs,
      log: this.#log,
      events: {
        onCommit: (pub) => {
          if (this.#link === link) this.#feed.onCommit(pub);
        },
        onHeartbeat: (hb) => {
          if (this.#link === link) this.#feed.onRemoteSeq(hb.seq);
        },
        onDown: (l, reason) => {
          this.#log.info({ epoch: l.epoch, reason }, 'dbproxy: link to primary down');
          if (this.#link === l) this.#phase('link-down', l.epoch, { reason });
          this.#stateChanged.emit('changed', undefined);
        },
      },
    });
    let ping: { epoch: number; seq: number };
    try {
      ping = await link.connect();
    } catch (e) {
      this.#log.debug({ err: e, epoch: info.epoch }, 'dbproxy: primary did not answer');
      link.markDown('unreachable');
      return link;
    }
    if (this.#stop.signal.aborted || this.#role !== 'secondary') {
      link.markDown('not needed');
      return link;
    }
    if (this.#epoch !== 0 && info.epoch !== this.#epoch) this.#failovers++;
    this.#epoch = info.epoch;
    this.#link = link;
    this.#log.info({ epoch: info.epoch, pid: info.pid }, 'dbproxy: following primary');
    this.#phase('following', info.epoch);
    if (this.#feed.deliveredSeq === null) this.#feed.deliveredSeq = ping.seq;
    this.#stateChanged.emit('changed', undefined);
    this.#feed.onRemoteSeq(ping.seq);
    return link;
  }

  async #promote(lock: ElectionLock): Promise<void> {
    this.#lock = lock;
    const epoch = lock.epoch;
    this.#phase('lock-acquired', epoch);
    // Beat from the very start (migrate may take long): silence means stalled, not busy.
    this.#lease = startLease(this.#leasePath, epoch, this.options.heartbeat.intervalMs);
    let primary: Primary;
    try {
      primary = await Primary.open(
        {
          options: this.options,
          log: this.#log,
          dbPath: this.#dbPath,
          runtimeDir: this.#runtimeDir,
          key: this.#key,
          infoPath: this.#infoPath,
          phase: (phase, e) => this.#phase(phase, e),
          onCommit: (pub) => this.#feed.onCommit(pub),
          served: this.#served,
        },
        epoch,
      );
    } catch (e) {
      await this.#lease?.stop();
      this.#lease = null;
      throw e;
    }
    this.#primary = primary;
    const old = this.#link;
    this.#link = null;
    old?.markDown('promoted');
    if (this.#epoch !== 0) this.#failovers++;
    this.#epoch = epoch;
    this.#promotions++;
    const seq = primary.coordinator.seq;
    if (this.#feed.deliveredSeq === null) this.#feed.deliveredSeq = seq;
    else if (seq > this.#feed.deliveredSeq) {
      // The dead primary's last commits were not all delivered here; the ring died with it.
      this.#feed.emitGap(this.#feed.deliveredSeq, seq);
    }
    removeEndpointFiles(this.#runtimeDir, this.#key, epoch);
    this.#setRole('primary');
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
    const p = this.#primary;
    if (this.#role !== 'primary' || p === null) {
      if (this.#closing !== null) throw this.#closedError();
      throw new DbProxyError('DBPROXY_NOT_PRIMARY', 'runExclusive runs only on the primary', {
        details: { role: this.#role, epoch: this.#epoch },
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
      epoch: this.#epoch,
      instanceId: this.options.instanceId,
      inFlight: this.#inFlight,
      retries: this.#retries,
      failovers: this.#failovers,
      promotions: this.#promotions,
      stalledPrimariesEnded: this.#stalledEnded,
      seq: this.#feed.deliveredSeq ?? 0,
      methods: this.#stats.snapshot(),
      served: { requests: this.#served.requests, errors: this.#served.errors },
      coordinator: this.#primary?.coordinator.metrics() ?? null,
    };
  }
}
