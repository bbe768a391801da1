import { Emitter, SILENT_LOGGER } from '@x/core';
import type pg from 'pg';
import { DbxError, isRetryable, pgErrorCode } from './errors.js';
import {
  callOptionsError,
  checkCallOptions,
  QUERY_OPTION_KEYS,
  readOptionsError,
  SESSION_OPTION_KEYS,
  statementOptionsError,
  WAIT_FOR_PRIMARY_OPTION_KEYS,
} from './internal/call-options.js';
import { copyFrom, copyTo, stream } from './internal/copy-stream.js';
import {
  type ExecContext,
  firstRow,
  runOnce,
  runStatement,
  type Statement,
  toResult,
  totalRowCount,
} from './internal/exec.js';
import { createNodes, Topology } from './internal/health.js';
import { Leases } from './internal/leases.js';
import { maxLsn, parseLsn } from './internal/lsn.js';
import type { Node } from './internal/node.js';
import { ReadRouter } from './internal/read-routing.js';
import { Sessions } from './internal/read-your-writes.js';
import { canRetryWrite, Retrier } from './internal/retry.js';
import { type ClusterRuntime, leaseWriterRetrying, onWriter } from './internal/runtime.js';
import { begin, runTx } from './internal/transactions.js';
import { cancelledError, errorMessage, raceAbort, sleep, unrefSleep } from './internal/util.js';
import { type ClusterOptions, type Logger, type ResolvedClusterOptions, resolveOptions } from './options.js';
import { txStorage } from './tx.js';
import type {
  Cluster,
  ClusterEventMap,
  ClusterStats,
  QueryOptions,
  QueryResult,
  ReadOptions,
  StatementOptions,
  Tx,
  TxHandle,
  TxOptions,
} from './types.js';

/**
 * Creates a cluster client: one pg pool per node, routing by method (`query`/`exec`/`runTx`/... go to
 * the writer, `readQuery`/`readQueryRow` to a healthy, caught-up replica), background health checks,
 * safe retries and read-your-writes. No I/O happens until the first call. Throws DBX_INVALID_OPTIONS
 * (naming the key path) for an unknown option or a bad value.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 *
 * await using db = createCluster({
 *   primary: process.env.DATABASE_URL!,
 *   replicas: (process.env.DATABASE_REPLICA_URLS ?? '').split(',').filter(Boolean),
 *   pool: { max: 20 },
 *   maxReplicaLagMs: 1_000, // replicas further behind serve no reads
 * });
 * await db.exec('create table if not exists notes (id int primary key, body text not null)');
 * const note = await db.session(async () => {
 *   await db.exec('insert into notes values ($1, $2) on conflict (id) do nothing', [1, 'hello']); // the primary
 *   // a replica that has replayed the insert, else the primary
 *   return db.readQueryRow<{ body: string }>('select body from notes where id = $1', [1]);
 * });
 * console.log(note); // { body: 'hello' }
 * ```
 */
export function createCluster(options: ClusterOptions): Cluster {
  return new ClusterImpl(resolveOptions(options));
}

/**
 * The cluster facade: lifecycle (start on first call, drain and close), events, and the hot paths of
 * reads and writes. Health and election, leasing, retries, read routing, read-your-writes,
 * transactions and COPY live in `internal/`, one file each.
 */
class ClusterImpl implements Cluster {
  readonly options: Readonly<ResolvedClusterOptions>;
  readonly #logger: Logger;
  readonly #ctx: ExecContext;
  readonly #events = new Emitter<ClusterEventMap>({
    onListenerError: (e, event) =>
      this.#logger.error({ event, err: errorMessage(e) }, 'dbx: event listener threw'),
  });
  readonly #topology: Topology;
  readonly #leases: Leases;
  readonly #retrier: Retrier;
  readonly #router: ReadRouter;
  readonly #sessions = new Sessions();
  readonly #rt: ClusterRuntime;
  #started = false;
  #closed = false;
  #closing: Promise<void> | null = null;
  #inflight = 0;
  #drained: Array<() => void> = [];

  constructor(options: ResolvedClusterOptions) {
    this.options = options;
    this.#logger = options.logger ?? SILENT_LOGGER;
    const nodes = createNodes(options, (node, e) => {
      this.#logger.debug({ node: node.name, err: e.message }, 'dbx: idle connection error');
      this.#topology.onConnectionError(node, e);
    });
    this.#topology = new Topology(nodes, options, this.#logger, (event, payload) =>
      this.#emit(event, payload),
    );
    this.#leases = new Leases(this.#topology);
    this.#retrier = new Retrier(options.retry, this.#logger, () => this.#closed);
    this.#ctx = {
      logger: this.#logger,
      slowQueryThresholdMs: options.slowQueryThresholdMs,
      cancelTimeoutMs: options.pool.connectionTimeoutMs || 5_000,
      onConnectionError: (node, e) => this.#topology.onConnectionError(node, e),
    };
    this.#router = new ReadRouter(this.#topology, this.#leases, options, this.#ctx);
    this.#rt = {
      owner: this,
      ctx: this.#ctx,
      maxAttempts: options.retry.maxAttempts,
      topology: this.#topology,
      leases: this.#leases,
      retrier: this.#retrier,
      sessions: this.#sessions,
      enter: () => this.#enter(),
      leave: () => this.#leave(),
    };
  }

  // ---------------------------------------------------------------- lifecycle

  #enter(): void {
    if (this.#closed) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
    if (!this.#started) this.#start();
    this.#inflight++;
    this.#retrier.deposit();
  }

  #leave(): void {
    this.#inflight--;
    if (this.#inflight === 0 && this.#drained.length > 0) {
      for (const r of this.#drained.splice(0)) r();
    }
  }

  #start(): void {
    this.#started = true;
    this.#topology.start();
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
    this.#topology.stop();
    const deadline = Date.now() + this.options.closeDrainTimeoutMs;
    if (this.#inflight > 0) {
      await Promise.race([
        new Promise<void>((resolve) => this.#drained.push(resolve)),
        unrefSleep(this.options.closeDrainTimeoutMs),
      ]);
    }
    await this.#topology.settle();
    const left = Math.max(0, deadline - Date.now());
    await Promise.all(
      this.#topology.nodes.map(async (n) => {
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
    this.#events.emit(event, payload);
  }

  // ---------------------------------------------------------------- health

  async checkHealth(opts?: { signal?: AbortSignal }): Promise<void> {
    checkCallOptions('checkHealth options', opts, QUERY_OPTION_KEYS);
    this.#enter();
    try {
      await raceAbort(Promise.all(this.#topology.nodes.map((n) => this.#topology.runCheck(n))), opts?.signal);
    } finally {
      this.#leave();
    }
  }

  async waitForPrimary(opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void> {
    checkCallOptions('waitForPrimary options', opts, WAIT_FOR_PRIMARY_OPTION_KEYS);
    this.#enter();
    try {
      const deadline = Date.now() + (opts?.timeoutMs ?? 30_000);
      for (;;) {
        if (opts?.signal?.aborted) throw cancelledError(opts.signal);
        const w = this.#topology.writer;
        if (w?.healthy && w.role === 'primary') return;
        if (Date.now() >= deadline) {
          throw new DbxError('DBX_NO_HEALTHY_NODE', 'no healthy primary appeared in time', {
            retryable: true,
          });
        }
        this.#topology.requestCheckAll();
        await sleep(this.options.healthCheck.fastRecheckMs, opts?.signal);
        if (this.#closed) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
      }
    } finally {
      this.#leave();
    }
  }

  // ---------------------------------------------------------------- read-your-writes

  session<T>(fn: () => Promise<T>, opts?: { token?: string | null }): Promise<T> {
    const bad = callOptionsError('session options', opts, SESSION_OPTION_KEYS);
    if (bad !== null) return Promise.reject(bad);
    return this.#sessions.run(fn, opts);
  }

  writeToken(): string | null {
    return this.#sessions.writeToken();
  }

  // ---------------------------------------------------------------- reads

  readQuery<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<QueryResult<R>> {
    const bad = readOptionsError(opts);
    if (bad !== null) return Promise.reject(bad);
    // Inside a runTx of this cluster a read joins the transaction: it must see the transaction's writes.
    const tx = txStorage.getStore();
    if (tx && tx.owner === this && !tx.closed) {
      return tx.query<R>(sql, params, opts?.signal === undefined ? undefined : { signal: opts.signal });
    }
    // Hot path: no signal, no token to honour: one callback-only attempt, the normal path on failure.
    const s = this.#sessions.current();
    const needsToken =
      opts?.token !== undefined ||
      (s !== undefined && this.options.readConsistency === 'session' && (s.token !== null || s.unknownWrite));
    if (opts?.signal === undefined && !needsToken && this.#started && !this.#closed) {
      const klass = opts?.node;
      const tried = new Set<Node>();
      const node = this.#router.readNode(klass, tried, opts?.maxLagMs);
      if (node !== null) {
        this.#inflight++;
        this.#retrier.deposit();
        return runOnce(
          this.#ctx,
          node,
          { method: 'readQuery', sql, params },
          this.#leases.hooks,
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
      const s = this.#sessions.current();
      if (s && this.options.readConsistency === 'session') {
        token = maxLsn(token, s.token);
        if (s.unknownWrite && klass !== 'replica') klass = 'primary';
      }
      return await this.#retrier.run(
        'readQuery',
        signal,
        this.options.retry.maxAttempts,
        isRetryable,
        async () => {
          if (tried.size >= this.#topology.nodes.length) tried.clear();
          const lease = await this.#router.leaseForRead(klass, token, tried, opts?.maxLagMs, signal);
          try {
            return toResult<R>(
              await runStatement(this.#ctx, lease, { method: 'readQuery', sql, params }, signal),
            );
          } finally {
            this.#leases.release(lease);
          }
        },
        prior,
      );
    } finally {
      this.#leave();
    }
  }

  readQueryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: ReadOptions,
  ): Promise<R | undefined> {
    return firstRow(this.readQuery<R>(sql, params, opts));
  }

  // ---------------------------------------------------------------- writes (the writer)

  /**
   * `query`/`exec` on the writer. The hot path (no signal, no session whose token must be recorded,
   * a healthy writer known) makes one callback-only attempt; a failure that is safe to retry
   * continues on the normal path.
   */
  #write<T>(
    statement: Statement,
    signal: AbortSignal | undefined,
    map: (res: pg.QueryResult | pg.QueryResult[]) => T,
  ): Promise<T> {
    const slow = (prior?: { error: unknown }) =>
      onWriter(
        this.#rt,
        statement.method,
        signal,
        (lease) => runStatement(this.#ctx, lease, statement, signal),
        true,
        prior,
      ).then(map);
    const w = this.#topology.writer;
    if (
      signal !== undefined ||
      this.#closed ||
      !this.#started ||
      w === null ||
      !w.healthy ||
      this.#sessions.current() !== undefined
    ) {
      return slow();
    }
    this.#inflight++;
    this.#retrier.deposit();
    return runOnce(
      this.#ctx,
      w,
      statement,
      this.#leases.hooks,
      (res) => {
        this.#leave();
        return map(res);
      },
      (e) => {
        this.#leave();
        if (pgErrorCode(e) === '25006') this.#topology.requestCheckAll(); // a standby answered: re-probe roles
        if (!canRetryWrite(e) || this.options.retry.maxAttempts <= 1) return Promise.reject(e);
        return slow({ error: e });
      },
    );
  }

  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<QueryResult<R>> {
    const bad = statementOptionsError('query options', opts);
    if (bad !== null) return Promise.reject(bad);
    return this.#write({ method: 'query', sql, params, name: opts?.name }, opts?.signal, toResult<R>);
  }

  queryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<R | undefined> {
    return firstRow(this.query<R>(sql, params, opts));
  }

  exec(sql: string, params?: readonly unknown[], opts?: StatementOptions): Promise<{ rowCount: number }> {
    const bad = statementOptionsError('exec options', opts);
    if (bad !== null) return Promise.reject(bad);
    return this.#write({ method: 'exec', sql, params, name: opts?.name }, opts?.signal, (r) => ({
      rowCount: totalRowCount(r),
    }));
  }

  async connect(opts?: { signal?: AbortSignal }): Promise<pg.PoolClient> {
    checkCallOptions('connect options', opts, QUERY_OPTION_KEYS);
    this.#enter();
    try {
      return (await leaseWriterRetrying(this.#rt, 'connect', opts?.signal)).client;
    } finally {
      this.#leave();
    }
  }

  // ---------------------------------------------------------------- transactions, COPY, streaming

  runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T> {
    return runTx(this.#rt, fn, opts);
  }

  begin(opts?: TxOptions): Promise<TxHandle> {
    return begin(this.#rt, opts);
  }

  copyFrom(
    sql: string,
    source: AsyncIterable<string | Buffer> | NodeJS.ReadableStream,
    opts?: QueryOptions,
  ): Promise<number> {
    return copyFrom(this.#rt, sql, source, opts);
  }

  copyTo(sql: string, opts?: QueryOptions): AsyncIterable<Buffer> {
    return copyTo(this.#rt, sql, opts);
  }

  stream<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: QueryOptions & { batchSize?: number },
  ): AsyncIterable<R> {
    return stream<R>(this.#rt, sql, params, opts);
  }

  // ---------------------------------------------------------------- stats

  stats(): ClusterStats {
    const writer = this.#topology.writer;
    return {
      nodes: this.#topology.nodes.map((n) => n.stats(n === writer)),
      writer: writer?.name ?? null,
      closed: this.#closed,
      retries: this.#retrier.retries,
      primaryFallbacks: this.#router.fallbacks,
    };
  }
}
