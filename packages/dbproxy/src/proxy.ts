import { timingSafeEqual } from 'node:crypto';
import diagnostics_channel from 'node:diagnostics_channel';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createWriteCoordinator,
  isWriteCoordinatorError,
  META_TABLE,
  type SqliteDatabase,
  type WriteCoordinator,
  type WriteCoordinatorMetrics,
} from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { type Applied, DbProxyError, isDbProxyError, type WireErrorCode, wireError } from './errors.js';
import { DeadlineQueue, LightSignal, Notifier, Reservoir, sleep, throwIfAborted } from './internal/async.js';
import { type ChangeEvent, ChangeStream } from './internal/change-stream.js';
import { type ElectionLock, lockPathFor, tryAcquireElectionLock } from './internal/election.js';
import { leasePathFor, readLease, startLease } from './internal/lease.js';
import { BYE_REASON, Link, LinkDownError, REFUSED_REASON } from './internal/link.js';
import { RpcServer } from './internal/rpc-server.js';
import {
  databaseKey,
  endpointsFor,
  ensureRuntimeDir,
  infoPathFor,
  newToken,
  type PrimaryInfo,
  readPrimaryInfo,
  removeQuietly,
  resolveDatabasePath,
  writeFileAtomic,
} from './internal/runtime-dir.js';
import { uuidv7 } from './internal/uuidv7.js';
import {
  checkCallOptions,
  checkWriteCall,
  type ResolvedWrite,
  resolveWrite,
} from './internal/write-input.js';
import { type DbProxyOptions, parseOptions, type ResolvedDbProxyOptions } from './options.js';
import {
  type AuthMeta,
  type CommitPublication,
  changesParamsSchema,
  METHOD_DB_CHANGES,
  METHOD_DB_PING,
  METHOD_DB_WRITE,
  pingParamsSchema,
  TOPIC_BYE,
  TOPIC_COMMIT,
  TOPIC_HEARTBEAT,
  type WriteResultWire,
  writeParamsSchema,
} from './protocol.js';

export type Role = 'starting' | 'primary' | 'secondary' | 'closed';

export interface RoleChange {
  role: Role;
  previous: Role;
  /** The epoch of the primary this process now follows or is (0 before any). */
  epoch: number;
}

export interface WriteOptions {
  signal?: AbortSignal;
  /** Idempotency key of the logical write; reuse it when you retry. Default: a fresh UUID. */
  requestId?: string;
  /** Overrides the method's timeout for this call. */
  timeoutMs?: number;
  /** `'full'` commits this write's batch under `synchronous = FULL`. */
  durability?: 'normal' | 'full';
}

export interface WriteResult<T> {
  value: T;
  /** The commit sequence; pass it as `read({ minSeq })` anywhere to see this write. */
  seq: number;
  /** True when the write had already been applied under this requestId (its stored result came back). */
  replayed: boolean;
}

export interface ExclusiveOptions {
  signal?: AbortSignal;
  /**
   * Idempotency key: a transaction already committed under it is not run again, its stored result comes
   * back with `replayed: true` (the result must then be JSON-serialisable). Default: none.
   */
  requestId?: string;
  /** How long the transaction may wait in the queue before it must have started; default `timeouts.longMs`. */
  timeoutMs?: number;
  /** `'full'` commits this transaction under `synchronous = FULL`. */
  durability?: 'normal' | 'full';
}

export interface ReadOptions {
  signal?: AbortSignal;
  /** Wait until the local connection sees this commit sequence. Default: this process's last write. */
  minSeq?: number;
  /** How long to wait for `minSeq`; default `timeouts.defaultMs`. */
  timeoutMs?: number;
}

export interface MethodMetrics {
  count: number;
  ok: number;
  /** Failures by error code. */
  errors: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
}

export interface DbProxyMetrics {
  role: Role;
  epoch: number;
  instanceId: string;
  /** Writes of this process not yet settled. */
  inFlight: number;
  /** Re-sends and retries after a lost link or a retryable error. */
  retries: number;
  /** Times this process moved to a newer primary (by promotion or by following one). */
  failovers: number;
  /** Times this process became primary. */
  promotions: number;
  /** Stalled primaries this process ended (SIGKILL) to take over. */
  stalledPrimariesEnded: number;
  /** Highest commit sequence delivered to this process. */
  seq: number;
  methods: Record<string, MethodMetrics>;
  /** On the primary: requests served for other processes. */
  served: { requests: number; errors: number };
  /** On the primary: the coordinator's snapshot. */
  coordinator: WriteCoordinatorMetrics | null;
}

export interface DbProxy {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  readonly role: Role;
  readonly epoch: number;
  readonly instanceId: string;
  /** Highest commit sequence of this process's own writes (the default `minSeq` of `read`). */
  readonly lastWriteSeq: number;
  /** Joins the election; memoised. `write`, `read` and `changes` call it for you. */
  start(opts?: { signal?: AbortSignal }): Promise<void>;
  write<T = unknown>(method: string, params: unknown, opts?: WriteOptions): Promise<WriteResult<T>>;
  /**
   * Primary only: runs the synchronous `fn` on the primary's writer connection in a transaction of its
   * own (BEGIN IMMEDIATE..COMMIT, never batched with other writes), in queue order with every local and
   * forwarded write; its commit gets a sequence and is published like any other. Rejects with
   * `DBPROXY_NOT_PRIMARY` elsewhere. If `fn` throws, the transaction is rolled back and that error comes back.
   */
  runExclusive<T>(fn: (db: SqliteDatabase) => T, opts?: ExclusiveOptions): Promise<WriteResult<T>>;
  read<T>(fn: (db: SqliteDatabase) => T, opts?: ReadOptions): Promise<T>;
  changes(opts?: { signal?: AbortSignal }): AsyncIterable<ChangeEvent>;
  onRoleChange(listener: (e: RoleChange) => void): () => void;
  metrics(): DbProxyMetrics;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** diagnostics_channel names. */
export const WRITE_CHANNEL = 'x:dbproxy:write';
export const SERVE_CHANNEL = 'x:dbproxy:serve';
export const ROLE_CHANNEL = 'x:dbproxy:role';
export const EXCLUSIVE_CHANNEL = 'x:dbproxy:exclusive';
/**
 * Election and failover phases, published synchronously as they happen: `{ phase, epoch, instanceId }`.
 * Promotion: `lock-acquired` → `database-open` (after `migrate`) → `coordinator-open` → `bound` →
 * `announced` (info file written). Following: `link-down` (with `reason`) and `following`.
 */
export const ELECTION_CHANNEL = 'x:dbproxy:election';
export type ElectionPhase =
  | 'lock-acquired'
  | 'database-open'
  | 'coordinator-open'
  | 'bound'
  | 'announced'
  | 'link-down'
  | 'following';
/** The `metrics().methods` bucket of `runExclusive` transactions. */
export const EXCLUSIVE_METRICS_KEY = '(exclusive)';
const writeTrace = diagnostics_channel.tracingChannel(WRITE_CHANNEL);
const exclusiveTrace = diagnostics_channel.tracingChannel(EXCLUSIVE_CHANNEL);
const serveTrace = diagnostics_channel.tracingChannel(SERVE_CHANNEL);
const roleChannel = diagnostics_channel.channel(ROLE_CHANNEL);
const electionChannel = diagnostics_channel.channel(ELECTION_CHANNEL);

export function createDbProxy(options: DbProxyOptions): DbProxy {
  return new Proxy_(parseOptions(options));
}

interface PrimaryState {
  epoch: number;
  token: string;
  db: Database.Database;
  coordinator: WriteCoordinator;
  server: RpcServer;
  heartbeat: NodeJS.Timeout;
  ring: CommitPublication[];
  /** requestId → origin, for the change events of writes in flight (`method` null: an exclusive transaction). */
  sources: Map<string, { source: string; method: string | null }>;
  unsubscribe: () => void;
  accepting: boolean;
}

class MethodStats {
  count = 0;
  ok = 0;
  errors: Record<string, number> = {};
  latency = new Reservoir(1024);
}

const DEADLINE = Symbol('deadline');

/** After losing its primary, a secondary retries the election this often ... */
const FAST_ELECTION_POLL_MS = 5;
/** ... for this long; then every `electionPollMs`. */
const FAST_ELECTION_WINDOW_MS = 1_000;

/** Thrown inside a job that reached the writer after its deadline; rolled back, reported as EXPIRED. */
class ExpiredAtRun extends Error {}

/**
 * Whether `pid` is a live process. A killed process stays signalable until its parent reaps it;
 * on Linux, /proc tells a zombie (`Z`) or a dying one (`X`) from a live one.
 */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  if (process.platform !== 'linux') return true;
  try {
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last ')'
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const at = stat.lastIndexOf(')') + 2;
    const state = stat.slice(at, at + 1);
    return state !== 'Z' && state !== 'X';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT'; // gone since the signal check
  }
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** What a failed job's error says about its effects (a job that committed the transaction itself: 'yes'). */
function appliedOf(e: { details?: Record<string, unknown> }): Applied {
  const a = e.details?.['applied'];
  return a === true ? 'yes' : a === 'unknown' ? 'unknown' : 'no';
}

/** Maps a coordinator error onto the wire codes; `applied` is what the coordinator guarantees. */
function fromCoordinatorError(e: unknown, method: string): unknown {
  if (!isWriteCoordinatorError(e)) return e;
  const details: Record<string, unknown> = { method, coordinatorCode: e.code };
  const sqliteCode = e.details?.['sqliteCode'];
  if (typeof sqliteCode === 'string') details['sqliteCode'] = sqliteCode;
  const make = (code: WireErrorCode, retryable?: boolean, applied: Applied = 'no'): DbProxyError =>
    wireError(code, e.message, {
      ...(retryable === undefined ? {} : { retryable }),
      applied,
      details,
      cause: e,
    });
  switch (e.code) {
    case 'WRITECOORDINATOR_METHOD_NOT_FOUND':
      return make('METHOD_NOT_FOUND');
    case 'WRITECOORDINATOR_INVALID_PARAMS':
      if (e.details?.['issues'] !== undefined) details['issues'] = e.details['issues'];
      return make('INVALID_PARAMS');
    case 'WRITECOORDINATOR_EXPIRED':
      return make('EXPIRED');
    case 'WRITECOORDINATOR_FENCED':
      // this process was replaced as primary; the caller retries on the new one
      return make('WRONG_PRIMARY', true);
    case 'WRITECOORDINATOR_CLOSED':
    case 'WRITECOORDINATOR_SHUTTING_DOWN':
      return make('SHUTTING_DOWN');
    case 'WRITECOORDINATOR_QUEUE_FULL':
      details['reason'] = 'queue full';
      return make('INTERNAL', true);
    case 'WRITECOORDINATOR_ABORTED':
      return e;
    case 'WRITECOORDINATOR_SQLITE':
      if (typeof sqliteCode === 'string' && sqliteCode.startsWith('SQLITE_CONSTRAINT'))
        return make('CONFLICT');
      return make('INTERNAL', e.retryable, appliedOf(e));
    case 'WRITECOORDINATOR_JOB_FAILED':
      // A job that ended the transaction itself may have committed; say so.
      return make('INTERNAL', false, appliedOf(e));
    default:
      return make('INTERNAL', e.retryable);
  }
}

class Proxy_ implements DbProxy {
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
  #primary: PrimaryState | null = null;
  #link: Link | null = null;
  #epoch = 0;
  #retiredEpoch = 0;
  #readDb: Database.Database | null = null;
  #readSeqStmt: Database.Statement | null = null;
  #supervisor: Promise<void> | null = null;

  readonly #stateChanged = new Notifier();
  readonly #seqAdvanced = new Notifier();
  readonly #slotFreed = new Notifier();
  readonly #deadlines = new DeadlineQueue();
  readonly #roleListeners = new Set<(e: RoleChange) => void>();
  readonly #streams = new Set<ChangeStream>();
  #deliveredSeq: number | null = null;
  #catchingUp: CommitPublication[] | null = null;
  #ownSeq = 0;

  #inFlight = 0;
  #retries = 0;
  #failovers = 0;
  #promotions = 0;
  #stalledEnded = 0;
  #served = 0;
  #servedErrors = 0;
  readonly #methods = new Map<string, MethodStats>();

  constructor(options: Readonly<ResolvedDbProxyOptions>) {
    this.options = options;
    this.#log = options.logger;
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
    const db = this.#openReadDb();
    this.#deliveredSeq = db === null ? 0 : this.#readCommittedSeqSafe(db);
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
      while (this.#inFlight > 0 && Date.now() < until) await sleep(5);
      this.#link?.markDown('closing');
    }
    // a promotion already under way finishes first, and is then shut down like any primary
    await this.#supervisor?.catch(() => {});
    const p = this.#primary;
    if (p !== null) {
      // 2. primary: refuse new remote writes (SHUTTING_DOWN), drain the coordinator's queue
      p.accepting = false;
      try {
        await p.coordinator.close({ drainTimeoutMs: this.options.drainTimeoutMs });
      } catch (e) {
        this.#log.warn({ err: e }, 'dbproxy: coordinator close failed');
      }
      clearInterval(p.heartbeat);
      p.unsubscribe();
      // 3. the answers and the last commits leave
      await p.server.flush(500);
      // 4. withdraw the info file (nobody else can have written it while we hold the lock), then
      //    say bye, so secondaries go straight to the election instead of waiting for a timeout
      const info = readPrimaryInfo(this.#infoPath);
      if (info !== null && info.epoch === p.epoch && info.pid === process.pid) removeQuietly(this.#infoPath);
      p.server.publish(TOPIC_BYE, { epoch: p.epoch });
      await p.server.flush(200);
      await p.server.close();
      this.#removeEndpointFiles(p.epoch + 1);
      p.db.close();
      this.#primary = null;
    }
    // 5. release the election last, so no successor starts while we still write; the lease beats
    //    until then, so nobody takes a slow close for a stall
    this.#lock?.release();
    this.#lock = null;
    await this.#lease?.stop();
    this.#lease = null;
    this.#readDb?.close();
    this.#readDb = null;
    for (const s of [...this.#streams]) s.end();
    this.#closed = true;
    this.#stateChanged.notify();
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
    for (const l of [...this.#roleListeners]) {
      try {
        l(e);
      } catch (err) {
        this.#log.error({ err }, 'dbproxy: role listener threw');
      }
    }
    this.#stateChanged.notify();
  }

  #phase(phase: ElectionPhase, epoch: number, extra: Record<string, unknown> = {}): void {
    if (electionChannel.hasSubscribers)
      electionChannel.publish({ phase, epoch, instanceId: this.options.instanceId, ...extra });
  }

  onRoleChange(listener: (e: RoleChange) => void): () => void {
    this.#roleListeners.add(listener);
    return () => this.#roleListeners.delete(listener);
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
        await sleep(5, signal).catch(() => {});
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
              else this.#stateChanged.once(check);
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
        await sleep(wait, signal);
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
          if (this.#link === link) this.#onCommit(pub);
        },
        onHeartbeat: (hb) => {
          if (this.#link === link) this.#onRemoteSeq(hb.seq);
        },
        onDown: (l, reason) => {
          this.#log.info({ epoch: l.epoch, reason }, 'dbproxy: link to primary down');
          if (this.#link === l) this.#phase('link-down', l.epoch, { reason });
          this.#stateChanged.notify();
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
    if (this.#deliveredSeq === null) this.#deliveredSeq = ping.seq;
    this.#stateChanged.notify();
    this.#onRemoteSeq(ping.seq);
    return link;
  }

  async #promote(lock: ElectionLock): Promise<void> {
    this.#lock = lock;
    const epoch = lock.epoch;
    const o = this.options;
    this.#phase('lock-acquired', epoch);
    // Beat from the very start (migrate may take long): silence means stalled, not busy.
    this.#lease = startLease(this.#leasePath, epoch, o.heartbeat.intervalMs);
    const db = new Database(this.#dbPath);
    let coordinator: WriteCoordinator | null = null;
    let server: RpcServer | null = null;
    try {
      db.pragma('journal_mode = WAL');
      db.pragma(`busy_timeout = ${o.coordinator.busyTimeoutMs ?? o.readBusyTimeoutMs}`);
      if (o.migrate !== undefined) o.migrate(db as unknown as SqliteDatabase);
      this.#phase('database-open', epoch);
      const c = o.coordinator;
      coordinator = createWriteCoordinator({
        database: db as unknown as SqliteDatabase,
        durability: o.durability,
        logger: o.logger,
        // A replaced primary (should it ever run again) cannot commit: the successor's epoch is higher.
        fencingEpoch: epoch,
        ...(c.queueSize === undefined ? {} : { queueSize: c.queueSize }),
        ...(c.maxBatchSize === undefined ? {} : { maxBatchSize: c.maxBatchSize }),
        ...(c.maxBatchDelayMs === undefined ? {} : { maxBatchDelayMs: c.maxBatchDelayMs }),
        ...(c.maxWaiting === undefined ? {} : { maxWaiting: c.maxWaiting }),
        ...(c.busyTimeoutMs === undefined ? {} : { busyTimeoutMs: c.busyTimeoutMs }),
        ...(c.idempotency === undefined
          ? {}
          : {
              idempotency: {
                ...(c.idempotency.maxAgeMs === undefined ? {} : { maxAgeMs: c.idempotency.maxAgeMs }),
                ...(c.idempotency.maxEntries === undefined ? {} : { maxEntries: c.idempotency.maxEntries }),
              },
            }),
      });
      this.#phase('coordinator-open', epoch);
      const token = newToken();
      const endpoints = endpointsFor(this.#runtimeDir, this.#key, epoch);
      const state: PrimaryState = {
        epoch,
        token,
        db,
        coordinator,
        server: null as unknown as RpcServer,
        heartbeat: null as unknown as NodeJS.Timeout,
        ring: [],
        sources: new Map(),
        unsubscribe: () => {},
        accepting: true,
      };
      server = new RpcServer((method, params) => this.#serve(state, method, params), this.#log);
      state.server = server;
      await server.bind(endpoints.rpc, endpoints.pub);
      this.#phase('bound', epoch);
      const co = coordinator;
      state.unsubscribe = co.subscribe((e) => {
        const pub: CommitPublication = {
          seq: e.seq,
          epoch,
          writes: e.jobs.map((j) => {
            const origin = j.requestId === null ? undefined : state.sources.get(j.requestId);
            return {
              method: origin === undefined ? j.method : origin.method,
              requestId: j.requestId,
              // every write job carries a requestId; a job without one is this process's runExclusive
              sourceInstanceId: origin?.source ?? (j.requestId === null ? o.instanceId : null),
            };
          }),
        };
        state.ring.push(pub);
        if (state.ring.length > o.changesBufferSize)
          state.ring.splice(0, state.ring.length - o.changesBufferSize);
        server!.publish(TOPIC_COMMIT, pub);
        this.#onCommit(pub);
      });
      // Only now, bound and ready, tell the others where we are.
      const info: PrimaryInfo = {
        version: 1,
        dbPath: this.#dbPath,
        endpoints,
        epoch,
        pid: process.pid,
        token,
        instanceId: o.instanceId,
        startedAt: Date.now(),
      };
      writeFileAtomic(this.#infoPath, JSON.stringify(info));
      this.#phase('announced', epoch);
      state.heartbeat = setInterval(() => {
        server!.publish(TOPIC_HEARTBEAT, { epoch, seq: co.seq, pid: process.pid, instanceId: o.instanceId });
      }, o.heartbeat.intervalMs);
      this.#primary = state;
    } catch (e) {
      await server?.close().catch(() => {});
      await coordinator?.close({ drainTimeoutMs: 0 }).catch(() => {});
      db.close();
      await this.#lease?.stop();
      this.#lease = null;
      throw e;
    }
    const old = this.#link;
    this.#link = null;
    old?.markDown('promoted');
    if (this.#epoch !== 0) this.#failovers++;
    this.#epoch = epoch;
    this.#promotions++;
    const seq = coordinator.seq;
    if (this.#deliveredSeq === null) this.#deliveredSeq = seq;
    else if (seq > this.#deliveredSeq) {
      // The dead primary's last commits were not all delivered here; the ring died with it.
      this.#emitGap(this.#deliveredSeq, seq);
    }
    this.#removeEndpointFiles(epoch);
    this.#setRole('primary');
  }

  /** Socket files of earlier epochs (dead primaries) are litter; remove them. */
  #removeEndpointFiles(belowEpoch: number): void {
    try {
      for (const f of readdirSync(this.#runtimeDir)) {
        const m = /^([0-9a-f]{16})-(\d+)\.(rpc|pub)$/.exec(f);
        if (m !== null && m[1] === this.#key && Number(m[2]) < belowEpoch)
          removeQuietly(join(this.#runtimeDir, f));
      }
    } catch {}
  }

  // ---------------------------------------------------------------- serving (primary)

  #checkAuth(state: PrimaryState, meta: AuthMeta): void {
    if (!sameSecret(meta.token, state.token) || meta.dbPath !== this.#dbPath || meta.epoch !== state.epoch) {
      throw wireError('WRONG_PRIMARY', 'refused: token, database path or epoch do not match this primary', {
        details: { epoch: state.epoch },
      });
    }
  }

  #serve(state: PrimaryState, method: string, params: unknown): unknown {
    if (method === METHOD_DB_WRITE) {
      // no parameter values in tracing contexts
      return serveTrace.hasSubscribers
        ? serveTrace.tracePromise(() => this.#serveWrite(state, params), { rpcMethod: method })
        : this.#serveWrite(state, params);
    }
    if (method === METHOD_DB_PING) {
      const p = pingParamsSchema.safeParse(params);
      if (!p.success) throw wireError('INVALID_PARAMS', 'invalid db.ping params');
      this.#checkAuth(state, p.data.meta);
      return {
        epoch: state.epoch,
        seq: state.coordinator.seq,
        pid: process.pid,
        instanceId: this.options.instanceId,
      };
    }
    if (method === METHOD_DB_CHANGES) {
      const p = changesParamsSchema.safeParse(params);
      if (!p.success) throw wireError('INVALID_PARAMS', 'invalid db.changes params');
      this.#checkAuth(state, p.data.meta);
      const after = p.data.afterSeq;
      const events = state.ring.filter((e) => e.seq > after);
      const first = state.ring[0];
      const complete =
        after >= state.coordinator.seq ||
        (first !== undefined && first.seq <= after + 1 && events.length > 0);
      return { events, complete, seq: state.coordinator.seq };
    }
    throw wireError('METHOD_NOT_FOUND', `unknown JSON-RPC method ${JSON.stringify(method).slice(0, 100)}`);
  }

  async #serveWrite(state: PrimaryState, params: unknown): Promise<WriteResultWire> {
    this.#served++;
    try {
      const p = writeParamsSchema.safeParse(params);
      if (!p.success) {
        throw wireError('INVALID_PARAMS', 'invalid db.write params', {
          details: { issues: p.error.issues.map((i) => ({ path: i.path, message: i.message })) },
        });
      }
      const { meta, method } = p.data;
      this.#checkAuth(state, meta);
      if (!state.accepting) throw wireError('SHUTTING_DOWN', 'the primary is shutting down');
      if (Date.now() >= meta.deadline) {
        throw wireError('EXPIRED', 'the write reached the primary after its deadline', {
          details: { method },
        });
      }
      const write = resolveWrite(this.options.writes, method, p.data.params);
      return await this.#submitLocal(
        state,
        write,
        meta.requestId,
        meta.deadline,
        meta.sourceInstanceId,
        undefined,
        p.data.durability,
      );
    } catch (e) {
      this.#servedErrors++;
      throw e;
    }
  }

  /**
   * Submits on the primary's coordinator. The job re-checks the deadline when it actually runs: the
   * coordinator refuses a job still queued at its deadline, but one batched behind a long job would
   * otherwise start late, after its caller has already been told TIMEOUT.
   */
  async #submitLocal(
    state: PrimaryState,
    write: ResolvedWrite,
    requestId: string,
    deadline: number,
    source: string,
    signal?: AbortSignal,
    durability?: 'normal' | 'full',
  ): Promise<WriteResultWire> {
    const { method, handler, value } = write;
    state.sources.set(requestId, { source, method });
    try {
      const r = await state.coordinator.submit<unknown>(
        (db) => {
          if (Date.now() >= deadline) throw new ExpiredAtRun();
          return handler(db, value as never);
        },
        {
          requestId,
          deadline,
          ...(signal === undefined ? {} : { signal }),
          ...(durability === undefined ? {} : { durability }),
        },
      );
      return { value: r.value, seq: r.seq, replayed: r.replayed };
    } catch (e) {
      if (isWriteCoordinatorError(e) && e.cause instanceof ExpiredAtRun) {
        throw wireError('EXPIRED', 'the write reached the head of the queue after its deadline', {
          details: { method },
        });
      }
      throw fromCoordinatorError(e, method);
    } finally {
      state.sources.delete(requestId);
    }
  }

  // ---------------------------------------------------------------- writes

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
      await sleep(this.options.timeouts.defaultMs, opts.signal, this.#slotFreed);
      if (this.#closing !== null) throw this.#closedError();
    }
    const stats = this.#statsFor(method);
    stats.count++;
    const t0 = performance.now();
    this.#inFlight++;
    try {
      const r = await this.#writeAttempts<T>(write, opts);
      stats.ok++;
      if (r.seq > this.#ownSeq) this.#ownSeq = r.seq;
      return r;
    } catch (e) {
      const code = isDbProxyError(e) ? e.code : 'ABORTED';
      stats.errors[code] = (stats.errors[code] ?? 0) + 1;
      throw e;
    } finally {
      this.#inFlight--;
      this.#slotFreed.notify();
      stats.latency.record(performance.now() - t0);
    }
  }

  #statsFor(name: string): MethodStats {
    // unknown names share one bucket, so a caller cannot grow the map without bound
    const method =
      name === EXCLUSIVE_METRICS_KEY || Object.hasOwn(this.options.writes, name) ? name : '(unknown)';
    let s = this.#methods.get(method);
    if (s === undefined) {
      s = new MethodStats();
      this.#methods.set(method, s);
    }
    return s;
  }

  async #writeAttempts<T>(write: ResolvedWrite, opts: WriteOptions): Promise<WriteResult<T>> {
    const o = this.options;
    const { method } = write;
    const requestId = opts.requestId ?? uuidv7();
    const timeoutMs =
      opts.timeoutMs ??
      o.timeouts.perMethod[method] ??
      (write.long ? o.timeouts.longMs : o.timeouts.defaultMs);
    const deadline = Date.now() + timeoutMs;

    // One signal for the whole logical write: the caller's and the deadline.
    const signal = new LightSignal();
    const deadlineTimer = this.#deadlines.add(timeoutMs, () => signal.abort(DEADLINE));
    const onAbort = (): void => signal.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    // `unknown`: some attempt may have been applied (it reached a primary and no answer came back).
    // `attempted`: some attempt reached a primary at all; if none did, the outcome is UNREACHABLE.
    let unknown = false;
    let attempted = false;
    let attempt = 0;
    const backoff = async (): Promise<void> => {
      const d = Math.min(o.retry.maxDelayMs, o.retry.initialDelayMs * 2 ** attempt++);
      await sleep(d * (0.5 + Math.random() / 2), signal, this.#stateChanged);
    };
    try {
      for (;;) {
        if (signal.aborted) throw signal.reason;
        const p = this.#primary;
        if (this.#role === 'primary' && p !== null) {
          if (!p.accepting)
            throw wireError('SHUTTING_DOWN', 'the proxy is closing', { applied: unknown ? 'unknown' : 'no' });
          attempted = true;
          const r = await this.#submitLocal(
            p,
            write,
            requestId,
            deadline,
            o.instanceId,
            signal.toAbortSignal(),
            opts.durability,
          );
          return r as WriteResult<T>;
        }
        if (this.#closed) throw this.#closedError();
        const link = this.#link;
        if (link === null || link.isDown) {
          // No primary right now (failover or startup): wait for one until the deadline.
          await sleep(timeoutMs, signal, this.#stateChanged);
          continue;
        }
        attempted = true;
        try {
          const a = link.auth;
          const r = (await link.call(
            METHOD_DB_WRITE,
            {
              meta: {
                epoch: a.epoch,
                dbPath: a.dbPath,
                token: a.token,
                requestId,
                sourceInstanceId: o.instanceId,
                deadline,
              },
              method,
              params: write.wire,
              ...(opts.durability === undefined ? {} : { durability: opts.durability }),
            },
            signal,
          )) as WriteResultWire;
          return r as WriteResult<T>;
        } catch (e) {
          if (e instanceof LinkDownError) {
            unknown ||= e.sent;
            this.#retries++;
            continue; // re-send, same requestId, to whoever is primary next
          }
          if (
            isDbProxyError(e) &&
            e.retryable &&
            e.code !== 'DBPROXY_EXPIRED' &&
            e.code !== 'DBPROXY_TIMEOUT'
          ) {
            if (e.applied !== 'no') unknown = true;
            this.#retries++;
            if (e.code === 'DBPROXY_WRONG_PRIMARY') link.markDown('refused as wrong primary');
            await backoff();
            continue;
          }
          // Aborted (deadline or caller) while the request was out: it may still be applied.
          if (signal.aborted && e === signal.reason) unknown = true;
          throw e;
        }
      }
    } catch (e) {
      if (e === DEADLINE || (signal.aborted && signal.reason === DEADLINE && !opts.signal?.aborted)) {
        if (!attempted) {
          throw wireError(
            'UNREACHABLE',
            `no primary answered within ${timeoutMs} ms; ${method} was not sent`,
            {
              applied: 'no',
              details: { method, requestId, timeoutMs },
            },
          );
        }
        throw wireError('TIMEOUT', `${method} did not complete within ${timeoutMs} ms`, {
          applied: unknown ? 'unknown' : 'no',
          details: { method, requestId, timeoutMs },
        });
      }
      if (e === undefined && opts.signal?.aborted) throw opts.signal.reason;
      if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_ABORTED') {
        throw opts.signal?.aborted ? opts.signal.reason : e;
      }
      throw e;
    } finally {
      deadlineTimer.cancel();
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  // ---------------------------------------------------------------- exclusive transactions (primary)

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
    const { requestId, signal, durability } = opts;
    const deadline = Date.now() + (opts.timeoutMs ?? this.options.timeouts.longMs);
    const stats = this.#statsFor(EXCLUSIVE_METRICS_KEY);
    stats.count++;
    const t0 = performance.now();
    // fn's own error comes back as it was thrown, not wrapped in the coordinator's JOB_FAILED
    let thrown: { error: unknown } | null = null;
    if (requestId !== undefined) p.sources.set(requestId, { source: this.options.instanceId, method: null });
    try {
      const r = await p.coordinator.runExclusive<T>(
        (db) => {
          try {
            return fn(db);
          } catch (e) {
            thrown = { error: e };
            throw e;
          }
        },
        {
          deadline,
          ...(requestId === undefined ? {} : { requestId }),
          ...(signal === undefined ? {} : { signal }),
          ...(durability === undefined ? {} : { durability }),
        },
      );
      stats.ok++;
      if (r.seq > this.#ownSeq) this.#ownSeq = r.seq;
      return { value: r.value, seq: r.seq, replayed: r.replayed };
    } catch (e) {
      const own = thrown as { error: unknown } | null;
      let err: unknown;
      if (own !== null && isWriteCoordinatorError(e) && e.cause === own.error) err = own.error;
      else if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_ABORTED')
        err = signal?.aborted ? signal.reason : e;
      else err = fromCoordinatorError(e, EXCLUSIVE_METRICS_KEY);
      const code = isDbProxyError(err) ? err.code : own !== null && err === own.error ? 'THROWN' : 'ABORTED';
      stats.errors[code] = (stats.errors[code] ?? 0) + 1;
      throw err;
    } finally {
      if (requestId !== undefined) p.sources.delete(requestId);
      stats.latency.record(performance.now() - t0);
    }
  }

  // ---------------------------------------------------------------- reads

  #openReadDb(): Database.Database | null {
    if (this.#readDb !== null) return this.#readDb;
    if (!existsSync(this.#dbPath)) return null;
    const db = new Database(this.#dbPath, {
      readonly: true,
      fileMustExist: true,
      timeout: this.options.readBusyTimeoutMs,
    });
    this.#readDb = db;
    return db;
  }

  #readCommittedSeqSafe(db: Database.Database): number {
    try {
      return db.transaction(() => this.#readCommittedSeq(db))();
    } catch {
      return 0;
    }
  }

  #readCommittedSeq(db: Database.Database): number {
    if (this.#readSeqStmt === null) {
      try {
        this.#readSeqStmt = db.prepare(`SELECT value FROM ${META_TABLE} WHERE key = 'seq'`);
      } catch {
        return 0; // no coordinator has run on this file yet
      }
    }
    const row = this.#readSeqStmt.get() as { value: number | bigint } | undefined;
    return row === undefined ? 0 : Number(row.value);
  }

  async read<T>(fn: (db: SqliteDatabase) => T, opts: ReadOptions = {}): Promise<T> {
    throwIfAborted(opts.signal);
    checkCallOptions(opts);
    if (this.#closing !== null) throw this.#closedError();
    await this.start(opts.signal === undefined ? {} : { signal: opts.signal });
    const minSeq = opts.minSeq ?? this.#ownSeq;
    const timeoutMs = opts.timeoutMs ?? this.options.timeouts.defaultMs;
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      if (this.#closing !== null) throw this.#closedError();
      const db = this.#openReadDb();
      if (db !== null) {
        let miss = false;
        // One read transaction: the sequence check and fn see the same snapshot.
        const value = db.transaction(() => {
          seen = this.#readCommittedSeq(db);
          if (seen < minSeq) {
            miss = true;
            return undefined;
          }
          return fn(db as unknown as SqliteDatabase);
        })();
        if (!miss) {
          if (value instanceof Promise) throw new TypeError('read(fn): fn must be synchronous');
          return value as T;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw wireError('TIMEOUT', `the local database did not reach seq ${minSeq} within ${timeoutMs} ms`, {
          details: { minSeq, seq: seen },
        });
      }
      await sleep(Math.min(left, 5), opts.signal, this.#seqAdvanced);
    }
  }

  // ---------------------------------------------------------------- changes

  changes(opts: { signal?: AbortSignal } = {}): AsyncIterable<ChangeEvent> {
    // Never throws: an aborted signal or a closed proxy fails the iterator's first next().
    const stream: ChangeStream = new ChangeStream(
      this.options.changesBufferSize,
      () => this.#streams.delete(stream),
      opts.signal,
    );
    if (this.#closing !== null) {
      stream.fail(this.#closedError());
      return stream;
    }
    this.#streams.add(stream);
    if (this.#role === 'starting') this.start().catch((e) => stream.fail(e));
    return stream;
  }

  /** A commit reached this process (from the local coordinator or the primary's PUB). */
  #onCommit(pub: CommitPublication): void {
    if (this.#catchingUp !== null) {
      this.#catchingUp.push(pub);
      return;
    }
    const last = this.#deliveredSeq;
    if (last !== null && pub.seq > last + 1 && this.#link !== null && this.#role === 'secondary') {
      this.#catchingUp = [pub];
      void this.#catchUp(this.#link, last);
      return;
    }
    this.#deliver(pub);
  }

  /** A heartbeat or ping told us the primary's seq; fetch what we missed, if anything. */
  #onRemoteSeq(seq: number): void {
    const last = this.#deliveredSeq;
    if (last === null || seq <= last || this.#catchingUp !== null) return;
    const link = this.#link;
    if (link === null) return;
    this.#catchingUp = [];
    void this.#catchUp(link, last);
  }

  async #catchUp(link: Link, afterSeq: number): Promise<void> {
    try {
      const r = (await link.call(METHOD_DB_CHANGES, { meta: link.auth, afterSeq })) as {
        events: CommitPublication[];
        complete: boolean;
        seq: number;
      };
      const first = r.events[0];
      // What the primary no longer has (or never had: it was promoted after those commits) is a gap.
      if (!r.complete) this.#emitGap(afterSeq, first !== undefined ? first.seq - 1 : r.seq);
      for (const e of r.events) this.#deliver(e);
    } catch (e) {
      this.#log.debug({ err: e }, 'dbproxy: change catch-up failed');
    }
    const queued = this.#catchingUp ?? [];
    this.#catchingUp = null;
    for (const pub of queued) {
      const last = this.#deliveredSeq;
      if (last !== null && pub.seq > last + 1) this.#emitGap(last, pub.seq - 1);
      this.#deliver(pub);
    }
  }

  #emitGap(afterSeq: number, toSeq: number): void {
    if (toSeq <= afterSeq) return;
    for (const s of this.#streams) s.push({ type: 'gap', afterSeq, toSeq });
    this.#deliveredSeq = toSeq;
    this.#seqAdvanced.notify();
  }

  #deliver(pub: CommitPublication): void {
    if (this.#deliveredSeq !== null && pub.seq <= this.#deliveredSeq) return;
    this.#deliveredSeq = pub.seq;
    for (const s of this.#streams) {
      for (const w of pub.writes) {
        s.push({
          type: 'write',
          seq: pub.seq,
          epoch: pub.epoch,
          method: w.method,
          requestId: w.requestId,
          sourceInstanceId: w.sourceInstanceId,
        });
      }
    }
    this.#seqAdvanced.notify();
  }

  // ---------------------------------------------------------------- metrics

  metrics(): DbProxyMetrics {
    const methods: Record<string, MethodMetrics> = {};
    for (const [name, s] of this.#methods) {
      methods[name] = {
        count: s.count,
        ok: s.ok,
        errors: { ...s.errors },
        p50Ms: s.latency.percentile(50),
        p99Ms: s.latency.percentile(99),
      };
    }
    return {
      role: this.#role,
      epoch: this.#epoch,
      instanceId: this.options.instanceId,
      inFlight: this.#inFlight,
      retries: this.#retries,
      failovers: this.#failovers,
      promotions: this.#promotions,
      stalledPrimariesEnded: this.#stalledEnded,
      seq: this.#deliveredSeq ?? 0,
      methods,
      served: { requests: this.#served, errors: this.#servedErrors },
      coordinator: this.#primary?.coordinator.metrics() ?? null,
    };
  }
}
