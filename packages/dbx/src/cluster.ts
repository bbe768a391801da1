import { AsyncLocalStorage } from 'node:async_hooks';
import { channel } from 'node:diagnostics_channel';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFromQuery, to as copyToQuery } from 'pg-copy-streams';
import Cursor from 'pg-cursor';
import { DbxError, isDbxError, isRetryable, isSerializationFailure, pgErrorCode } from './errors.js';
import { RetryBudget } from './internal/budget.js';
import {
  destroyConnection,
  type ExecContext,
  type Lease,
  markNotSent,
  type OnceHooks,
  runOnce,
  runStatement,
  statementDone,
  toResult,
  totalRowCount,
  wasNotSent,
  wrapError,
} from './internal/exec.js';
import { formatLsn, maxLsn, parseLsn } from './internal/lsn.js';
import { Node } from './internal/node.js';
import {
  backoffDelay,
  cancelledError,
  Emitter,
  errorMessage,
  raceAbort,
  sleep,
  unrefSleep,
  withTimeout,
} from './internal/util.js';
import {
  type ClusterOptions,
  type Logger,
  type ResolvedClusterOptions,
  resolveOptions,
  silentLogger,
} from './options.js';
import { beginStatement, TxImpl, txStorage, validateTxOptions } from './tx.js';
import type {
  Cluster,
  ClusterEventMap,
  ClusterStats,
  NodeClass,
  NodeRole,
  QueryOptions,
  QueryResult,
  ReadOptions,
  Tx,
  TxHandle,
  TxOptions,
} from './types.js';

/** `x:dbx:health`: one message per health check (node, ok, role, latency, lag). */
export const healthChannel = channel('x:dbx:health');

/** A read-your-writes scope: the newest write LSN of this session. */
interface Session {
  token: bigint | null;
  /** A write happened but its LSN could not be read: reads go to the primary. */
  unknownWrite: boolean;
}

interface PrimarySample {
  lsn: bigint;
  at: number;
}

const MAX_PRIMARY_SAMPLES = 512;

/** Pool clients that carry dbx's error listener, and those that reported a connection error. */
const guarded = new WeakSet<pg.PoolClient>();
const broken = new WeakSet<pg.PoolClient>();

/**
 * Creates a cluster client: one pg pool per node, routing by method (`query`/`exec`/`runTx`/... go to
 * the writer, `readQuery`/`readQueryRow` to a healthy, caught-up replica), background health checks,
 * safe retries and read-your-writes. No I/O happens until the first call.
 */
export function createCluster(options: ClusterOptions): Cluster {
  return new ClusterImpl(resolveOptions(options));
}

class ClusterImpl implements Cluster {
  readonly options: Readonly<ResolvedClusterOptions>;
  readonly #nodes: Node[];
  readonly #logger: Logger;
  readonly #ctx: ExecContext;
  readonly #sessions = new AsyncLocalStorage<Session>();
  readonly #events = new Emitter<ClusterEventMap>();
  #writer: Node | null;
  #rr = 0;
  #started = false;
  #closed = false;
  #closing: Promise<void> | null = null;
  #inflight = 0;
  #drained: Array<() => void> = [];
  #retries = 0;
  #fallbacks = 0;
  #samples: PrimarySample[] = [];
  #splitBrainWarned = false;
  readonly #budget: RetryBudget | null;

  constructor(options: ResolvedClusterOptions) {
    this.options = options;
    this.#logger = options.logger ?? silentLogger;
    const onPoolError = (node: Node, e: Error) => {
      this.#logger.debug({ node: node.name, err: e.message }, 'dbx: idle connection error');
      this.#onConnectionError(node, e);
    };
    const configs = [options.primary, ...options.replicas];
    const names = configs.map((c, i) =>
      typeof c === 'object' && c.name !== undefined ? c.name : i === 0 ? 'primary' : `replica${i}`,
    );
    if (new Set(names).size !== names.length) {
      throw new DbxError('DBX_INVALID_OPTIONS', 'node names must be unique', { details: { names } });
    }
    this.#nodes = configs.map(
      (c, i) => new Node(c, i === 0 ? 'primary' : 'replica', names[i] as string, options, onPoolError),
    );
    const primary = this.#nodes[0] as Node;
    this.#writer = primary;
    const b = options.retry.budget;
    this.#budget = b ? new RetryBudget(b.ratio, b.minPerSecond) : null;
    this.#ctx = {
      logger: this.#logger,
      slowQueryThresholdMs: options.slowQueryThresholdMs,
      cancelTimeoutMs: options.pool.connectionTimeoutMs || 5_000,
      onConnectionError: (node, e) => this.#onConnectionError(node, e),
    };
  }

  // ---------------------------------------------------------------- lifecycle

  #enter(): void {
    if (this.#closed) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
    if (!this.#started) this.#start();
    this.#inflight++;
    this.#budget?.deposit();
  }

  #leave(): void {
    this.#inflight--;
    if (this.#inflight === 0 && this.#drained.length > 0) {
      for (const r of this.#drained.splice(0)) r();
    }
  }

  #start(): void {
    this.#started = true;
    for (const n of this.#nodes) this.#scheduleCheck(n, 0);
  }

  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #doClose(): Promise<void> {
    // Order: stop intake, stop health checks, drain in-flight operations (bounded), end the pools.
    this.#closed = true;
    for (const n of this.#nodes) {
      if (n.timer) clearTimeout(n.timer);
      n.timer = null;
    }
    const deadline = Date.now() + this.options.closeDrainTimeoutMs;
    if (this.#inflight > 0) {
      await Promise.race([
        new Promise<void>((resolve) => this.#drained.push(resolve)),
        unrefSleep(this.options.closeDrainTimeoutMs),
      ]);
    }
    await Promise.all(this.#nodes.map((n) => n.checking?.catch(() => {})));
    for (const n of this.#nodes) n.dropHealthClient();
    const left = Math.max(0, deadline - Date.now());
    await Promise.all(
      this.#nodes.map(async (n) => {
        let ended = false;
        const ending = n.pool
          .end()
          .catch((e: unknown) => {
            this.#logger.warn({ node: n.name, err: errorMessage(e) }, 'dbx: error ending a pool');
          })
          .finally(() => {
            ended = true;
          });
        await Promise.race([ending, unrefSleep(left + 100)]);
        if (!ended) {
          this.#logger.warn(
            { node: n.name },
            'dbx: pool did not end in time (a client is still checked out)',
          );
        }
      }),
    );
    this.#events.clear();
    this.#logger.info({}, 'dbx: cluster closed');
  }

  on<E extends keyof ClusterEventMap>(event: E, listener: (e: ClusterEventMap[E]) => void): () => void {
    return this.#events.on(event, listener);
  }

  #emit<E extends keyof ClusterEventMap>(event: E, payload: ClusterEventMap[E]): void {
    this.#events.emit(event, payload, (e) =>
      this.#logger.error({ event, err: errorMessage(e) }, 'dbx: event listener threw'),
    );
  }

  // ---------------------------------------------------------------- health

  #scheduleCheck(node: Node, delayMs: number): void {
    if (this.#closed) return;
    if (node.timer) clearTimeout(node.timer);
    node.timer = setTimeout(() => {
      node.timer = null;
      this.#runCheck(node).catch(() => {});
    }, delayMs);
    node.timer.unref();
  }

  #runCheck(node: Node): Promise<void> {
    if (node.checking) return node.checking;
    const p = (async () => {
      try {
        await this.#checkNode(node);
      } finally {
        node.checking = null;
        const hc = this.options.healthCheck;
        // While a node fails but is not yet down, confirm quickly; otherwise keep the normal pace.
        const failing = node.consecutiveFailures > 0 && node.healthy;
        this.#scheduleCheck(node, failing ? hc.fastRecheckMs : hc.intervalMs);
      }
    })();
    node.checking = p;
    return p;
  }

  /** A connection error on `node`: re-check it at once instead of waiting for the interval. */
  #onConnectionError(node: Node, e: unknown): void {
    if (this.#closed) return;
    node.recordFailure(e);
    // The writer failing may mean a failover: look for a promoted node right away, not at the next tick.
    if (node === this.#writer) this.#requestCheckAll();
    else this.#recheckSoon(node);
  }

  /** Re-probes every node's role soon (a standby answered a write, or no writer is known). */
  #requestCheckAll(): void {
    for (const n of this.#nodes) this.#recheckSoon(n);
  }

  /** Schedules a check of `node` no sooner than `fastRecheckMs` after its last one. */
  #recheckSoon(node: Node): void {
    if (this.#closed || node.checking) return;
    const since = node.lastCheckAt === null ? Number.POSITIVE_INFINITY : Date.now() - node.lastCheckAt;
    const fast = this.options.healthCheck.fastRecheckMs;
    this.#scheduleCheck(node, since >= fast ? 0 : fast - since);
  }

  async #checkNode(node: Node): Promise<void> {
    if (this.#closed) return;
    const hc = this.options.healthCheck;
    let result: Awaited<ReturnType<Node['check']>>;
    try {
      result = await node.check(hc.timeoutMs);
    } catch (e) {
      if (this.#closed) return;
      node.consecutiveFailures++;
      node.lastCheckAt = Date.now();
      node.recordFailure(e);
      if (node.healthy && node.consecutiveFailures >= hc.failuresBeforeDown) {
        node.healthy = false;
        this.#logger.warn(
          { node: node.name, role: node.role, failures: node.consecutiveFailures, err: errorMessage(e) },
          'dbx: node down',
        );
        this.#emit('nodeDown', {
          type: 'nodeDown',
          node: node.name,
          role: node.role,
          error: errorMessage(e),
        });
        this.#electWriter(null);
      }
      if (healthChannel.hasSubscribers) {
        healthChannel.publish({ node: node.name, ok: false, healthy: node.healthy, error: errorMessage(e) });
      }
      return;
    }
    if (this.#closed) return;
    node.latencyMs = result.latencyMs;
    node.lastCheckAt = Date.now();
    node.consecutiveFailures = 0;
    node.lastError = null;
    const newRole: NodeRole = result.inRecovery ? 'replica' : 'primary';
    let change: { from: NodeRole; to: NodeRole } | null = null;
    if (newRole !== node.role) {
      change = { from: node.role, to: newRole };
      if (newRole === 'primary') node.promotedAt = Date.now();
      node.role = newRole;
    }
    if (!node.healthy) {
      node.healthy = true;
      this.#logger.info({ node: node.name, role: node.role }, 'dbx: node up');
      this.#emit('nodeUp', { type: 'nodeUp', node: node.name, role: node.role });
    }
    if (newRole === 'primary') {
      node.lsn = result.lsn;
      node.lagBytes = 0;
      node.lagMs = 0;
    }
    this.#electWriter(change ? { node, ...change } : null);
    if (newRole === 'primary' && node === this.#writer && result.lsn !== null) {
      this.#samples.push({ lsn: result.lsn, at: Date.now() });
      if (this.#samples.length > MAX_PRIMARY_SAMPLES) this.#samples.shift();
    }
    if (newRole === 'replica') this.#updateLag(node, result.lsn);
    if (healthChannel.hasSubscribers) {
      healthChannel.publish({
        node: node.name,
        ok: true,
        healthy: node.healthy,
        role: node.role,
        latencyMs: node.latencyMs,
        lagBytes: node.lagBytes,
        lagMs: node.lagMs,
      });
    }
  }

  /**
   * Lag of a replica measured against the primary's WAL positions: bytes behind the newest primary
   * sample, and time since the primary first passed the replica's replay position (hasql only looks
   * at the standby's receive-replay gap, which reads 0 when the standby stops receiving).
   */
  #updateLag(node: Node, replay: bigint | null): void {
    // Not max(old, new): after a demotion the old insert position says nothing about replay.
    node.lsn = replay;
    const latest = this.#samples[this.#samples.length - 1];
    if (replay === null || latest === undefined) {
      node.lagBytes = null;
      node.lagMs = null;
      return;
    }
    if (replay >= latest.lsn) {
      node.lagBytes = 0;
      node.lagMs = 0;
      return;
    }
    node.lagBytes = Number(latest.lsn - replay);
    const first = this.#samples.find((s) => s.lsn > replay) ?? latest;
    node.lagMs = Date.now() - first.at;
  }

  /**
   * Picks the write target: a healthy node reporting it is not in recovery. When several do (a
   * replica was promoted while the old primary still runs), the most recently promoted wins: the
   * old primary is presumed fenced.
   */
  #electWriter(change: { node: Node; from: NodeRole; to: NodeRole } | null): void {
    const prev = this.#writer;
    const primaries = this.#nodes.filter((n) => n.healthy && n.role === 'primary');
    let next: Node | null = null;
    for (const n of primaries) {
      if (
        next === null ||
        n.promotedAt > next.promotedAt ||
        (n.promotedAt === next.promotedAt && n === prev && next !== prev)
      ) {
        next = n;
      }
    }
    if (primaries.length > 1 && !this.#splitBrainWarned) {
      this.#splitBrainWarned = true;
      this.#logger.warn(
        { nodes: primaries.map((n) => n.name), writer: next?.name ?? null },
        'dbx: more than one node reports being a primary; writing to the most recently promoted',
      );
    }
    if (next !== prev) {
      this.#writer = next;
      this.#samples = [];
      this.#logger.warn(
        { from: prev?.name ?? null, to: next?.name ?? null },
        next ? `dbx: writer is now ${next.name}` : 'dbx: no healthy primary',
      );
    }
    if (change) {
      this.#logger.warn(
        { node: change.node.name, from: change.from, to: change.to },
        `dbx: role change: ${change.node.name} ${change.from} -> ${change.to}`,
      );
      this.#emit('roleChange', {
        type: 'roleChange',
        node: change.node.name,
        from: change.from,
        to: change.to,
        previousWriter: prev?.name ?? null,
        writer: this.#writer?.name ?? null,
      });
    } else if (next !== prev && next !== null) {
      this.#emit('roleChange', {
        type: 'roleChange',
        node: next.name,
        from: next.role,
        to: next.role,
        previousWriter: prev?.name ?? null,
        writer: next.name,
      });
    }
  }

  async checkHealth(opts?: { signal?: AbortSignal }): Promise<void> {
    this.#enter();
    try {
      await raceAbort(Promise.all(this.#nodes.map((n) => this.#runCheck(n))), opts?.signal);
    } finally {
      this.#leave();
    }
  }

  async waitForPrimary(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void> {
    this.#enter();
    try {
      const deadline = Date.now() + (opts?.timeoutMs ?? 30_000);
      for (;;) {
        if (opts?.signal?.aborted) throw cancelledError(opts.signal);
        const w = this.#writer;
        if (w?.healthy && w.role === 'primary') return;
        if (Date.now() >= deadline) {
          throw new DbxError('DBX_NO_HEALTHY_NODE', 'no healthy primary appeared in time', {
            retryable: true,
          });
        }
        this.#requestCheckAll();
        await sleep(this.options.healthCheck.fastRecheckMs, opts?.signal);
        if (this.#closed) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
      }
    } finally {
      this.#leave();
    }
  }

  // ---------------------------------------------------------------- leasing and retry

  /** Checks a client out of `node`'s pool. Failures here never sent anything: always safe to retry. */
  #acquire(node: Node, signal: AbortSignal | undefined): Promise<Lease> {
    const connecting = signal
      ? raceAbort(node.pool.connect(), signal, (c) => c.release())
      : node.pool.connect();
    return connecting.then(
      (client) => {
        this.#guard(node, client);
        return { node, client, discard: false };
      },
      (e: unknown) => {
        if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
        throw this.#connectFailed(node, e);
      },
    );
  }

  /**
   * pg-pool listens for errors only while a client is idle; one arriving while it is checked out and
   * between statements would otherwise be an uncaught exception. Each client gets one listener.
   */
  readonly #guard = (node: Node, client: pg.PoolClient): void => {
    if (guarded.has(client)) return;
    guarded.add(client);
    client.on('error', (e) => {
      broken.add(client);
      this.#onConnectionError(node, e);
    });
  };

  readonly #connectFailed = (node: Node, e: unknown): DbxError => {
    node.errors++;
    this.#onConnectionError(node, e);
    return markNotSent(
      new DbxError('DBX_CONNECTION_FAILED', `could not connect to node ${node.name}: ${errorMessage(e)}`, {
        retryable: true,
        cause: e,
        details: { node: node.name },
      }),
    );
  };

  readonly #hooks: OnceHooks = {
    guard: (node, client) => this.#guard(node, client),
    connectFailed: (node, e) => this.#connectFailed(node, e),
    isBroken: (client) => broken.has(client),
  };

  #release(lease: Lease): void {
    lease.client.release(lease.discard || broken.has(lease.client) ? true : undefined);
  }

  #noWriter(): DbxError {
    this.#requestCheckAll();
    return markNotSent(
      new DbxError('DBX_NO_HEALTHY_NODE', 'no healthy primary to write to', {
        retryable: true,
        details: { nodes: this.#nodes.map((n) => ({ name: n.name, role: n.role, healthy: n.healthy })) },
      }),
    );
  }

  #leaseWriter(signal: AbortSignal | undefined): Promise<Lease> {
    const w = this.#writer;
    if (!w?.healthy) return Promise.reject(this.#noWriter());
    return this.#acquire(w, signal);
  }

  /**
   * Runs `fn` up to `maxAttempts` times while `canRetry` allows, sleeping a full-jitter exponential
   * backoff between attempts. Exhaustion after a retry throws DBX_RETRY_EXHAUSTED with the last error.
   */
  async #retrying<T>(
    op: string,
    signal: AbortSignal | undefined,
    maxAttempts: number,
    canRetry: (e: unknown) => boolean,
    fn: () => Promise<T>,
    prior?: { error: unknown },
  ): Promise<T> {
    let last: unknown;
    let attempts = 0;
    let budgetExhausted = false;
    let pending = prior;
    for (;;) {
      if (signal?.aborted) throw cancelledError(signal);
      try {
        attempts++;
        if (pending) {
          // The hot path already made the first attempt and failed with this error.
          const { error } = pending;
          pending = undefined;
          throw error;
        }
        return await fn();
      } catch (e) {
        if (isDbxError(e) && (e.code === 'DBX_QUERY_CANCELLED' || e.code === 'DBX_CLUSTER_CLOSED')) throw e;
        if (!canRetry(e)) throw e;
        last = e;
        if (attempts >= maxAttempts) break;
        if (this.#budget && !this.#budget.tryWithdraw()) {
          budgetExhausted = true;
          break;
        }
        this.#retries++;
        const { baseDelayMs, maxDelayMs } = this.options.retry;
        const delayMs = backoffDelay(attempts - 1, baseDelayMs, maxDelayMs);
        this.#logger.debug({ op, attempt: attempts, delayMs, err: errorMessage(e) }, 'dbx: retrying');
        await sleep(delayMs, signal);
        if (this.#closed) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
      }
    }
    if (attempts <= 1 && !budgetExhausted) throw last;
    const details: Record<string, unknown> = { op, attempts };
    if (budgetExhausted) details.budgetExhausted = true;
    const state = pgErrorCode(last);
    if (state !== undefined) details.sqlState = state;
    if (isDbxError(last)) details.lastCode = last.code;
    throw new DbxError(
      'DBX_RETRY_EXHAUSTED',
      budgetExhausted
        ? `${op} failed after ${attempts} attempt(s), retry budget exhausted: ${errorMessage(last)}`
        : `${op} failed after ${attempts} attempts: ${errorMessage(last)}`,
      {
        cause: last,
        details,
      },
    );
  }

  /** Writes may be retried only when the statement never reached a server, or a standby refused it. */
  static #canRetryWrite(e: unknown): boolean {
    return wasNotSent(e) || pgErrorCode(e) === '25006';
  }

  /** Runs `fn` on a leased writer connection, retrying only the safe cases. */
  async #onWriter<T>(
    op: string,
    signal: AbortSignal | undefined,
    fn: (lease: Lease) => Promise<T>,
    recordWrite: boolean,
    prior?: { error: unknown },
  ): Promise<T> {
    this.#enter();
    try {
      return await this.#retrying(
        op,
        signal,
        this.options.retry.maxAttempts,
        ClusterImpl.#canRetryWrite,
        () => this.#writeAttempt(signal, fn, recordWrite),
        prior,
      );
    } finally {
      this.#leave();
    }
  }

  async #writeAttempt<T>(
    signal: AbortSignal | undefined,
    fn: (lease: Lease) => Promise<T>,
    recordWrite: boolean,
  ): Promise<T> {
    const lease = await this.#leaseWriter(signal);
    try {
      const value = await fn(lease);
      if (recordWrite && this.#sessions.getStore() !== undefined) await this.#recordWrite(lease);
      return value;
    } catch (e) {
      if (pgErrorCode(e) === '25006') this.#requestCheckAll();
      throw e;
    } finally {
      this.#release(lease);
    }
  }

  // ---------------------------------------------------------------- read-your-writes

  /** After a write inside a session, remember the primary's WAL insert position as the session token. */
  async #recordWrite(lease: Lease): Promise<void> {
    const s = this.#sessions.getStore();
    if (!s) return;
    try {
      const r = await lease.client.query<{ lsn: string }>('select pg_current_wal_insert_lsn()::text as lsn');
      const lsn = r.rows[0]?.lsn;
      if (lsn) s.token = maxLsn(s.token, parseLsn(lsn));
      else s.unknownWrite = true;
    } catch {
      s.unknownWrite = true;
    }
  }

  async session<T>(fn: () => Promise<T>, opts?: { token?: string | null }): Promise<T> {
    const seed = opts?.token ? parseLsn(opts.token) : null;
    const outer = this.#sessions.getStore();
    if (outer) {
      outer.token = maxLsn(outer.token, seed);
      return fn();
    }
    return this.#sessions.run({ token: seed, unknownWrite: false }, fn);
  }

  writeToken(): string | null {
    const s = this.#sessions.getStore();
    return s?.token != null ? formatLsn(s.token) : null;
  }

  // ---------------------------------------------------------------- reads

  /** Within the lag bounds: the cluster's, or `maxLagMs` given for this read. */
  #lagOk(n: Node, maxLagMs: number | null | undefined): boolean {
    const { maxReplicaLagBytes } = this.options;
    const maxReplicaLagMs = maxLagMs === undefined ? this.options.maxReplicaLagMs : maxLagMs;
    if (maxReplicaLagMs !== null && n.lagMs !== null && n.lagMs > maxReplicaLagMs) return false;
    if (maxReplicaLagBytes !== null && n.lagBytes !== null && n.lagBytes > maxReplicaLagBytes) return false;
    return true;
  }

  #pick(nodes: Node[]): Node {
    const n = nodes[this.#rr++ % nodes.length] as Node;
    if (this.#rr > 1e9) this.#rr = 0;
    return n;
  }

  /** Checks on `lease` (a replica) that it replayed `token`, polling until `deadline` (epoch ms). */
  async #caughtUp(
    lease: Lease,
    token: bigint,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<boolean> {
    for (;;) {
      const r = await runStatement(
        this.#ctx,
        lease,
        'replayPosition',
        'select pg_last_wal_replay_lsn()::text as lsn',
        undefined,
        signal,
      );
      const text = (Array.isArray(r) ? r[0] : r)?.rows[0]?.lsn as string | null | undefined;
      if (text) {
        const lsn = parseLsn(text);
        lease.node.lsn = maxLsn(lease.node.lsn, lsn);
        if (lsn >= token) return true;
      } else {
        return false; // no longer a standby: let the caller route again
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await sleep(Math.min(10, left), signal);
    }
  }

  /** Healthy replicas within the lag bound that have not failed this read (plus the writer for 'any'). */
  #readCandidates(
    klass: NodeClass | undefined,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
  ): Node[] {
    const out: Node[] = [];
    for (const n of this.#nodes) {
      if (n.healthy && n.role === 'replica' && !tried.has(n) && this.#lagOk(n, maxLagMs)) out.push(n);
    }
    const w = this.#writer;
    if (klass === 'any' && w?.healthy && !tried.has(w)) out.push(w);
    return out;
  }

  /**
   * The node for a read that needs no particular WAL position: the writer for 'primary'; else
   * round-robin over the candidates; else (default class only) the writer as fallback. Null = none.
   */
  #readNode(
    klass: NodeClass | undefined,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
    candidates?: Node[],
  ): Node | null {
    const w = this.#writer;
    if (klass === 'primary') return w?.healthy ? w : null;
    const c = candidates ?? this.#readCandidates(klass, tried, maxLagMs);
    if (c.length > 0) return this.#pick(c);
    if (klass === 'replica' || !w?.healthy) return null;
    this.#fallbacks++;
    return w;
  }

  #noReadNode(klass: NodeClass | undefined): DbxError {
    if (klass !== 'replica') return this.#noWriter();
    return markNotSent(
      new DbxError('DBX_NO_HEALTHY_NODE', 'no healthy replica within the lag bound', {
        retryable: true,
        details: { nodes: this.#nodes.map((n) => ({ name: n.name, role: n.role, healthy: n.healthy })) },
      }),
    );
  }

  /** Chooses and leases a node for a read. `tried` holds nodes that already failed this read. */
  async #leaseForRead(
    klass: NodeClass | undefined,
    token: bigint | null,
    tried: Set<Node>,
    maxLagMs: number | null | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Lease> {
    let candidates: Node[] | undefined;
    if (token !== null && klass !== 'primary') {
      candidates = this.#readCandidates(klass, tried, maxLagMs);
      const known = candidates.filter((n) => n.role === 'primary' || (n.lsn !== null && n.lsn >= token));
      if (known.length > 0) {
        candidates = known;
      } else {
        // Health data is older than the write: ask the replicas themselves (GitLab's "find caught-up
        // replica"). The wait bound is for the whole read, not per replica.
        const deadline = Date.now() + this.options.readYourWritesWaitMs;
        const start = this.#rr++;
        for (let i = 0; i < candidates.length; i++) {
          const n = candidates[(start + i) % candidates.length] as Node;
          tried.add(n);
          let lease: Lease;
          try {
            lease = await this.#acquire(n, signal);
          } catch (e) {
            if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
            continue;
          }
          let ok = false;
          try {
            ok = await this.#caughtUp(lease, token, deadline, signal);
          } catch (e) {
            this.#release(lease);
            if (isDbxError(e) && e.code === 'DBX_QUERY_CANCELLED') throw e;
            continue;
          }
          if (ok) return lease;
          this.#release(lease);
        }
        candidates = [];
      }
    }
    const node = this.#readNode(klass, tried, maxLagMs, candidates);
    if (node === null) throw this.#noReadNode(klass);
    tried.add(node);
    return this.#acquire(node, signal);
  }

  readQuery<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<QueryResult<R>> {
    // Inside a runTx of this cluster a read joins the transaction: it must see the transaction's writes.
    const tx = txStorage.getStore();
    if (tx && tx.owner === this && !tx.closed) return tx.query<R>(sql, params, opts);
    // Hot path: no signal, no token to honour: one callback-only attempt, the normal path on failure.
    const s = this.#sessions.getStore();
    const needsToken =
      opts?.token !== undefined ||
      (s !== undefined && this.options.readConsistency === 'session' && (s.token !== null || s.unknownWrite));
    if (opts?.signal === undefined && !needsToken && this.#started && !this.#closed) {
      const klass = opts?.node;
      const tried = new Set<Node>();
      const node = this.#readNode(klass, tried, opts?.maxLagMs);
      if (node !== null) {
        this.#inflight++;
        this.#budget?.deposit();
        return runOnce(
          this.#ctx,
          node,
          'readQuery',
          sql,
          params,
          this.#hooks,
          (res) => {
            this.#leave();
            return toResult<R>(res);
          },
          (e) => {
            this.#leave();
            if (!isRetryable(e) || this.options.retry.maxAttempts <= 1) return Promise.reject(e);
            tried.add(node);
            return this.#read<R>(sql, params, opts, tried, { error: e });
          },
        );
      }
    }
    return this.#read<R>(sql, params, opts, new Set<Node>());
  }

  async #read<R>(
    sql: string,
    params: readonly unknown[] | undefined,
    opts: ReadOptions | undefined,
    tried: Set<Node>,
    prior?: { error: unknown },
  ): Promise<QueryResult<R>> {
    this.#enter();
    try {
      const signal = opts?.signal;
      let token = opts?.token ? parseLsn(opts.token) : null;
      let klass = opts?.node;
      const s = this.#sessions.getStore();
      if (s && this.options.readConsistency === 'session') {
        token = maxLsn(token, s.token);
        if (s.unknownWrite && klass !== 'replica') klass = 'primary';
      }
      return await this.#retrying(
        'readQuery',
        signal,
        this.options.retry.maxAttempts,
        isRetryable,
        async () => {
          if (tried.size >= this.#nodes.length) tried.clear();
          const lease = await this.#leaseForRead(klass, token, tried, opts?.maxLagMs, signal);
          try {
            return toResult<R>(await runStatement(this.#ctx, lease, 'readQuery', sql, params, signal));
          } finally {
            this.#release(lease);
          }
        },
        prior,
      );
    } finally {
      this.#leave();
    }
  }

  async readQueryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<R | undefined> {
    return (await this.readQuery<R>(sql, params, opts)).rows[0];
  }

  // ---------------------------------------------------------------- writes (the writer)

  /**
   * `query`/`exec` on the writer. The hot path (no signal, no session whose token must be recorded,
   * a healthy writer known) makes one callback-only attempt; a failure that is safe to retry
   * continues on the normal path.
   */
  #write<T>(
    method: string,
    sql: string,
    params: readonly unknown[] | undefined,
    signal: AbortSignal | undefined,
    map: (res: pg.QueryResult | pg.QueryResult[]) => T,
  ): Promise<T> {
    const slow = (prior?: { error: unknown }) =>
      this.#onWriter(
        method,
        signal,
        (lease) => runStatement(this.#ctx, lease, method, sql, params, signal),
        true,
        prior,
      ).then(map);
    const w = this.#writer;
    if (
      signal !== undefined ||
      this.#closed ||
      !this.#started ||
      w === null ||
      !w.healthy ||
      this.#sessions.getStore() !== undefined
    ) {
      return slow();
    }
    this.#inflight++;
    this.#budget?.deposit();
    return runOnce(
      this.#ctx,
      w,
      method,
      sql,
      params,
      this.#hooks,
      (res) => {
        this.#leave();
        return map(res);
      },
      (e) => {
        this.#leave();
        if (pgErrorCode(e) === '25006') this.#requestCheckAll(); // a standby answered: re-probe roles
        if (!ClusterImpl.#canRetryWrite(e) || this.options.retry.maxAttempts <= 1) return Promise.reject(e);
        return slow({ error: e });
      },
    );
  }

  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions,
  ): Promise<QueryResult<R>> {
    return this.#write('query', sql, params, opts?.signal, toResult<R>);
  }

  async queryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions,
  ): Promise<R | undefined> {
    return (await this.query<R>(sql, params, opts)).rows[0];
  }

  exec(sql: string, params?: readonly unknown[], opts?: QueryOptions): Promise<{ rowCount: number }> {
    return this.#write('exec', sql, params, opts?.signal, (r) => ({ rowCount: totalRowCount(r) }));
  }

  async connect(opts?: { signal?: AbortSignal }): Promise<pg.PoolClient> {
    this.#enter();
    try {
      const lease = await this.#retrying(
        'connect',
        opts?.signal,
        this.options.retry.maxAttempts,
        ClusterImpl.#canRetryWrite,
        () => this.#leaseWriter(opts?.signal),
      );
      return lease.client;
    } finally {
      this.#leave();
    }
  }

  // ---------------------------------------------------------------- transactions

  async #rollbackQuietly(tx: TxImpl): Promise<void> {
    if (tx.lease.discard) return; // the connection is dropped: the server rolls back
    try {
      await tx.control('rollback');
    } catch {
      tx.lease.discard = true;
    }
  }

  async #commit(tx: TxImpl): Promise<void> {
    const res = await tx.control('commit');
    const command = (Array.isArray(res) ? res[0] : (res as pg.QueryResult))?.command;
    if (command === 'ROLLBACK') {
      // COMMIT of a transaction that had an error silently rolls back; never report that as success.
      throw new DbxError(
        'DBX_QUERY_FAILED',
        'the transaction was aborted by an earlier error (a caught statement failure); COMMIT rolled it back',
        { details: { node: tx.lease.node.name, method: 'commit', sqlState: '25P02' } },
      );
    }
  }

  async runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T> {
    validateTxOptions(opts);
    const outer = txStorage.getStore();
    if (outer && outer.owner === this && !outer.closed) return outer.runTx(fn, opts);
    this.#enter();
    try {
      const signal = opts?.signal;
      const maxAttempts = opts?.maxAttempts ?? this.options.retry.maxAttempts;
      const canRetry = (e: unknown) => {
        if (isSerializationFailure(e) || wasNotSent(e)) return true;
        // 25006 in a transaction we made read-only is the caller's mistake, not a standby answering.
        if (pgErrorCode(e) !== '25006' || opts?.readOnly) return false;
        this.#requestCheckAll();
        return true;
      };
      return await this.#retrying('runTx', signal, maxAttempts, canRetry, async () => {
        const lease = await this.#leaseWriter(signal);
        const tx = new TxImpl(this, this.#ctx, lease, signal);
        try {
          try {
            await tx.control(beginStatement(opts));
          } catch (e) {
            // Nothing of the caller's ran yet: a failed BEGIN is always safe to retry.
            if (isDbxError(e) && e.code !== 'DBX_QUERY_CANCELLED' && isRetryable(e)) throw markNotSent(e);
            throw e;
          }
          let result: T;
          try {
            result = await txStorage.run(tx, () => fn(tx));
          } catch (e) {
            tx.markClosed();
            await this.#rollbackQuietly(tx);
            throw e;
          }
          tx.markClosed();
          await this.#commit(tx);
          if (!opts?.readOnly) await this.#recordWrite(lease);
          return result;
        } finally {
          tx.markClosed();
          this.#release(lease);
        }
      });
    } finally {
      this.#leave();
    }
  }

  async begin(opts?: TxOptions): Promise<TxHandle> {
    validateTxOptions(opts);
    this.#enter();
    let lease: Lease | undefined;
    try {
      lease = await this.#retrying(
        'begin',
        opts?.signal,
        this.options.retry.maxAttempts,
        ClusterImpl.#canRetryWrite,
        () => this.#leaseWriter(opts?.signal),
      );
      const tx = new TxImpl(this, this.#ctx, lease, opts?.signal);
      await tx.control(beginStatement(opts));
      return this.#handle(tx, opts);
    } catch (e) {
      if (lease) this.#release(lease);
      this.#leave();
      throw e;
    }
  }

  #handle(tx: TxImpl, opts: TxOptions | undefined): TxHandle {
    let finished = false;
    const finish = async (how: 'commit' | 'rollback') => {
      if (finished)
        throw new DbxError('DBX_TX_CLOSED', 'the transaction is already committed or rolled back');
      finished = true;
      tx.markClosed();
      try {
        if (how === 'commit') {
          try {
            await this.#commit(tx);
          } catch (e) {
            await this.#rollbackQuietly(tx);
            throw e;
          }
          if (!opts?.readOnly) await this.#recordWrite(tx.lease);
        } else {
          // Never fails: if the connection is gone, the server has rolled back already.
          await this.#rollbackQuietly(tx);
        }
      } finally {
        this.#release(tx.lease);
        this.#leave();
      }
    };
    const handle: TxHandle = {
      query: (sql, params, o) => tx.query(sql, params, o),
      queryRow: (sql, params, o) => tx.queryRow(sql, params, o),
      exec: (sql, params, o) => tx.exec(sql, params, o),
      runTx: (fn, o) => tx.runTx(fn, o),
      commit: () => finish('commit'),
      rollback: () => finish('rollback'),
      // `await using tx = await cluster.begin()`: rolled back unless committed.
      [Symbol.asyncDispose]: () => (finished ? Promise.resolve() : finish('rollback')),
    };
    return handle;
  }

  // ---------------------------------------------------------------- COPY and streaming

  copyFrom(
    sql: string,
    source: AsyncIterable<string | Buffer> | NodeJS.ReadableStream,
    opts?: QueryOptions,
  ): Promise<number> {
    const signal = opts?.signal;
    return this.#onWriter(
      'copyFrom',
      signal,
      async (lease) => {
        if (signal?.aborted) throw cancelledError(signal);
        const started = performance.now();
        const stream = lease.client.query(copyFromQuery(sql));
        try {
          await pipeline(source as AsyncIterable<string | Buffer>, stream, signal ? { signal } : {});
        } catch (e) {
          lease.discard = true;
          if (signal?.aborted) throw cancelledError(signal, e);
          throw wrapError(e, lease.node, 'copyFrom');
        }
        this.#observe(lease.node, 'copyFrom', sql, started, stream.rowCount);
        return stream.rowCount;
      },
      true,
    );
  }

  #observe(node: Node, method: string, sql: string, started: number, rowCount: number): void {
    node.queries++;
    statementDone(this.#ctx, node, method, sql, started, () => rowCount);
  }

  async *copyTo(sql: string, opts?: QueryOptions): AsyncIterable<Buffer> {
    const signal = opts?.signal;
    this.#enter();
    try {
      const lease = await this.#retrying(
        'copyTo',
        signal,
        this.options.retry.maxAttempts,
        ClusterImpl.#canRetryWrite,
        () => this.#leaseWriter(signal),
      );
      const started = performance.now();
      const stream = lease.client.query(copyToQuery(sql));
      const onAbort = () => stream.destroy(cancelledError(signal as AbortSignal));
      signal?.addEventListener('abort', onAbort, { once: true });
      let done = false;
      try {
        for await (const chunk of stream) yield chunk as Buffer;
        done = true;
        this.#observe(lease.node, 'copyTo', sql, started, stream.rowCount);
      } catch (e) {
        lease.discard = true;
        if (signal?.aborted) throw cancelledError(signal, e);
        throw wrapError(e, lease.node, 'copyTo');
      } finally {
        signal?.removeEventListener('abort', onAbort);
        if (!done) {
          // Stopped mid-COPY: the connection is in an unknown protocol state.
          lease.discard = true;
          stream.destroy();
        }
        this.#release(lease);
      }
    } finally {
      this.#leave();
    }
  }

  async *stream<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions & { batchSize?: number },
  ): AsyncIterable<R> {
    const signal = opts?.signal;
    const batchSize = opts?.batchSize ?? 100;
    if (!(Number.isInteger(batchSize) && batchSize > 0)) {
      throw new DbxError('DBX_INVALID_OPTIONS', 'batchSize must be a positive integer');
    }
    // Inside a runTx of this cluster, stream on the transaction's connection.
    const tx = txStorage.getStore();
    const inTx = tx && tx.owner === this && !tx.closed ? tx : undefined;
    this.#enter();
    try {
      const lease: Lease = inTx
        ? inTx.lease
        : await this.#retrying(
            'stream',
            signal,
            this.options.retry.maxAttempts,
            ClusterImpl.#canRetryWrite,
            () => this.#leaseWriter(signal),
          );
      const started = performance.now();
      const cursor = lease.client.query(new Cursor<R>(sql, params as unknown[] | undefined));
      let count = 0;
      let done = false;
      try {
        for (;;) {
          const rows = await raceAbort(cursor.read(batchSize), signal);
          if (rows.length === 0) break;
          count += rows.length;
          for (const r of rows) yield r;
        }
        done = true;
        this.#observe(lease.node, 'stream', sql, started, count);
      } catch (e) {
        if (!inTx) lease.discard = true;
        if (isDbxError(e)) throw e;
        throw wrapError(e, lease.node, 'stream');
      } finally {
        try {
          // Bounded: on a server that stopped answering, closing the cursor would wait forever.
          await withTimeout(
            cursor.close(),
            this.#ctx.cancelTimeoutMs,
            () => new Error('cursor close timed out'),
          );
        } catch {
          lease.discard = true;
          destroyConnection(lease.client);
        }
        if (!done && signal?.aborted && !inTx) lease.discard = true;
        if (!inTx) this.#release(lease);
      }
    } finally {
      this.#leave();
    }
  }

  // ---------------------------------------------------------------- stats

  stats(): ClusterStats {
    return {
      nodes: this.#nodes.map((n) => n.stats(n === this.#writer)),
      writer: this.#writer?.name ?? null,
      closed: this.#closed,
      retries: this.#retries,
      primaryFallbacks: this.#fallbacks,
    };
  }
}
