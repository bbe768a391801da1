import { hostname } from 'node:os';
import { type Cluster, currentQuerier } from '@x/dbx';
import { physicalDdlRequired } from './context.js';
import { isSchemaOpsError, SchemaOpsError } from './errors.js';
import { drive, resume } from './internal/drive.js';
import type { DriveDeps } from './internal/drive-context.js';
import {
  checkTenants,
  invalidInput,
  listFilterSchema,
  reconcileOptionsSchema,
  runInputSchema,
  uuidShape,
} from './internal/input.js';
import { Ledger } from './internal/ledger.js';
import { acquireProjectLock, type ProjectLock } from './internal/lock.js';
import { closedError, notFound, replayError } from './internal/operation-errors.js';
import { requestHash } from './internal/request-hash.js';
import { Telemetry } from './internal/telemetry.js';
import {
  DEFAULT_LIST_LIMIT,
  handlerProblem,
  type Logger,
  parseReconcilerOptions,
  parseSchemaOpsOptions,
  type ReconcilerOptions,
  type ResolvedSchemaOpsOptions,
  type SchemaOpsOptions,
} from './options.js';
import { startBackgroundReconciler } from './reconciler.js';
import type { TenantSource } from './tenants.js';
import type {
  BackgroundReconciler,
  ListedOperation,
  Operation,
  OperationHandler,
  OperationStatus,
  ReconcileOptions,
  RunInput,
  SchemaOpsEvent,
  SchemaOpsEventType,
  SchemaOpsMetrics,
} from './types.js';

const OWNER = `${hostname()}:${process.pid}`;

/** The orchestrator of schema operations (`createSchemaOps`). */
export interface SchemaOps {
  /** The options it runs with, defaults filled in, frozen. */
  readonly options: Readonly<ResolvedSchemaOpsOptions>;
  /** Creates / upgrades the ledger schema (also done lazily by every other call). Idempotent, safe under concurrent start. */
  migrate(opts?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Registers (or replaces) the handler of an operation type, like the `operations` option. Throws
   * SCHEMAOPS_INVALID_INPUT for an empty type or a malformed handler.
   */
  define<Req>(type: string, handler: OperationHandler<Req>): void;
  /**
   * Starts an operation under the project's lock: records it in the ledger with every step, then
   * runs the base DDL, every tenant's DDL, the system step and the cache step. Resolves with the
   * `committed` operation; rejects when it did not commit (the ledger tells what was undone). With an
   * `idempotencyKey` already used, returns that operation, replays its failure, or resumes it.
   * Must not be called inside a dbx transaction.
   */
  run<Req>(input: RunInput<Req>): Promise<Operation>;
  /**
   * Resumes an unfinished operation on the same ledger row, under the project's lock, from its first
   * unfinished step (forward, or backward when it was compensating). Resolves once it is settled
   * (`committed`, `compensated` or `failed`); rejects if it still needs repair. A `committed` or
   * `compensated` operation comes back unchanged.
   */
  reconcile(operationId: string, opts?: ReconcileOptions): Promise<Operation>;
  /** The operation with its steps, from the ledger. Rejects with SCHEMAOPS_NOT_FOUND for an unknown id. */
  get(operationId: string, opts?: { signal?: AbortSignal }): Promise<Operation>;
  /**
   * Operations, most recently updated first, optionally of one project and in some statuses; at most
   * `limit` (default {@link DEFAULT_LIST_LIMIT}).
   */
  list(filter?: {
    project?: string;
    statuses?: readonly OperationStatus[];
    limit?: number;
    signal?: AbortSignal;
  }): Promise<ListedOperation[]>;
  /** Operations in `applying`, `compensating`, `failed` or `needs_repair`, oldest update first. */
  listRepairable(
    project: string | null,
    limit?: number,
    opts?: { signal?: AbortSignal },
  ): Promise<ListedOperation[]>;
  /**
   * Starts a background reconciler: every `intervalMs` it resumes the operations left `applying`,
   * `compensating` or `needs_repair` whose backoff has passed. `opts` override the `reconciler`
   * option. `close()` stops it.
   */
  startReconciler(opts?: ReconcilerOptions): BackgroundReconciler;
  /** Calls `listener` on each event of type `event`; returns the function that unsubscribes. */
  on<E extends SchemaOpsEventType>(
    event: E,
    listener: (e: Extract<SchemaOpsEvent, { type: E }>) => void,
  ): () => void;
  /** A snapshot of the counters now. */
  metrics(): SchemaOpsMetrics;
  /**
   * Stops intake (later calls reject with SCHEMAOPS_CLOSED), stops the background reconcilers (a
   * repair in flight finishes), then waits for the operations in flight. Closes neither the cluster
   * nor the tenant source. Every call returns the same promise.
   */
  close(): Promise<void>;
  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * The orchestrator's public face: input checks, the project lock, idempotency, and the ledger reads.
 * Driving an operation through its steps lives in `internal/drive.ts` and the files it names.
 */
class SchemaOpsImpl implements SchemaOps {
  readonly options: Readonly<ResolvedSchemaOpsOptions>;
  readonly #cluster: Cluster;
  readonly #tenants: TenantSource;
  readonly #ledger: Ledger;
  readonly #handlers = new Map<string, OperationHandler<unknown>>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #reconcilers = new Set<BackgroundReconciler>();
  readonly #log: Logger | undefined;
  #closing: Promise<void> | null = null;
  readonly #telemetry: Telemetry;
  readonly #deps: DriveDeps;

  constructor(options: SchemaOpsOptions) {
    this.options = parseSchemaOpsOptions(options);
    this.#cluster = this.options.cluster;
    this.#tenants = this.options.tenants;
    this.#log = this.options.logger;
    this.#ledger = new Ledger(this.#cluster, this.options.ledgerSchema);
    for (const [type, h] of Object.entries(this.options.operations)) this.#handlers.set(type, h);
    this.#telemetry = new Telemetry(this.#log);
    this.#deps = {
      cluster: this.#cluster,
      tenants: this.#tenants,
      ledger: this.#ledger,
      failFast: this.options.failFast,
      log: this.#log,
      telemetry: this.#telemetry,
      owner: OWNER,
      decodeRequest: (handler, type, raw) => this.#decodeRequest(handler, type, raw),
      load: (id) => this.#load(id),
    };
  }

  // ---- public API ---------------------------------------------------------------------------------

  migrate(opts: { signal?: AbortSignal } = {}): Promise<void> {
    this.#checkOpen();
    return this.#ledger.migrate(opts.signal);
  }

  define<Req>(type: string, handler: OperationHandler<Req>): void {
    this.#checkOpen();
    if (typeof type !== 'string' || type.length === 0) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'an operation type must be a non-empty string');
    }
    const problem = handlerProblem(handler);
    if (problem !== null) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', problem, { details: { type } });
    }
    this.#handlers.set(type, handler as OperationHandler<unknown>);
  }

  run<Req>(input: RunInput<Req>): Promise<Operation> {
    // Checked now, so a call made before close() is accepted and waited for by it.
    if (this.#closing) return Promise.reject(closedError());
    return this.#track(() => this.#run(input as RunInput<unknown>));
  }

  async #run(input: RunInput<unknown>): Promise<Operation> {
    const parsed = runInputSchema.safeParse(input);
    if (!parsed.success) throw invalidInput('run input', parsed.error);
    const inp = parsed.data;
    const handler = this.#handlerFor(inp.type, inp.handler);
    const request = this.#decodeRequest(handler, inp.type, inp.request);
    if (currentQuerier() !== undefined) {
      throw new SchemaOpsError(
        'SCHEMAOPS_INVALID_INPUT',
        'run() must not be called inside a dbx transaction: every tenant needs a transaction of its own',
      );
    }
    const skipBaseDdl = inp.skipBaseDdl ?? false;
    if (!skipBaseDdl && !this.#tenants.hasBase(inp.project)) {
      throw new SchemaOpsError(
        'SCHEMAOPS_INVALID_INPUT',
        'the project has no base target; pass skipBaseDdl',
        {
          details: { project: inp.project },
        },
      );
    }
    const signal = inp.signal;
    signal?.throwIfAborted();
    await this.#ledger.migrate(signal);
    const concurrency = inp.concurrency ?? this.options.concurrency;
    const lock = await this.#lock(inp.project, this.options.lockWaitMs, signal);
    try {
      const hash = requestHash(inp.type, request, skipBaseDdl);
      if (inp.idempotencyKey !== undefined) {
        const existing = await this.#ledger.findByKey(inp.project, inp.idempotencyKey);
        if (existing) {
          if (existing.requestHash !== hash || existing.type !== inp.type) {
            throw new SchemaOpsError(
              'SCHEMAOPS_IDEMPOTENCY_CONFLICT',
              'the idempotency key was used for a different request',
              { details: { operationId: existing.id, project: inp.project } },
            );
          }
          this.#telemetry.counts.operations.deduplicated++;
          if (existing.status === 'committed') return await this.#load(existing.id);
          if (existing.status === 'applying' || existing.status === 'compensating') {
            // We hold the project lock, so its owner is gone: finish it rather than start a twin.
            const outcome = await resume(this.#deps, existing.id, handler, lock, signal, concurrency);
            if (outcome.status !== 'committed') throw outcome.error;
            return await this.#load(existing.id);
          }
          throw replayError(existing);
        }
      }
      const tenants = await this.#tenants.list(inp.project, signal ? { signal } : {});
      checkTenants(tenants);
      const op = await this.#ledger.insert({
        project: inp.project,
        type: inp.type,
        request,
        requestHash: hash,
        idempotencyKey: inp.idempotencyKey ?? null,
        skipBaseDdl,
        physicalDdlRequired: inp.physicalDdlRequired ?? physicalDdlRequired(),
        tenants,
        owner: OWNER,
      });
      this.#telemetry.counts.operations.started++;
      const outcome = await drive(this.#deps, op, handler, lock, signal, concurrency);
      if (outcome.status !== 'committed') throw outcome.error;
      return await this.#load(op.id);
    } finally {
      await lock.release();
    }
  }

  reconcile(operationId: string, opts: ReconcileOptions = {}): Promise<Operation> {
    // Checked now, so a call made before close() is accepted and waited for by it.
    if (this.#closing) return Promise.reject(closedError());
    return this.#track(() => this.#reconcile(operationId, opts));
  }

  async #reconcile(operationId: string, opts: ReconcileOptions): Promise<Operation> {
    const parsed = reconcileOptionsSchema.safeParse(opts);
    if (!parsed.success) throw invalidInput('reconcile options', parsed.error);
    const o = parsed.data;
    this.#checkId(operationId);
    const signal = o.signal;
    signal?.throwIfAborted();
    await this.#ledger.migrate(signal);
    const summary = await this.#ledger.summary(operationId, signal);
    if (!summary) throw notFound(operationId);
    const lock = await this.#lock(summary.project, o.lockWaitMs ?? this.options.lockWaitMs, signal);
    try {
      const op = await this.#load(operationId);
      if (op.status === 'committed' || op.status === 'compensated') return op;
      const handler = this.#handlerFor(op.type, o.handler);
      this.#telemetry.counts.reconcile.attempts++;
      const outcome = await resume(
        this.#deps,
        operationId,
        handler,
        lock,
        signal,
        o.concurrency ?? this.options.concurrency,
      );
      if (outcome.status === 'committed') this.#telemetry.counts.reconcile.repaired++;
      else if (outcome.status === 'compensated') this.#telemetry.counts.reconcile.compensated++;
      else this.#telemetry.counts.reconcile.failed++;
      // committed, compensated and failed are settled states the ledger now tells truthfully.
      if (outcome.status === 'needs_repair') throw outcome.error;
      return await this.#load(operationId);
    } finally {
      await lock.release();
    }
  }

  async get(operationId: string, opts: { signal?: AbortSignal } = {}): Promise<Operation> {
    this.#checkOpen();
    this.#checkId(operationId);
    await this.#ledger.migrate(opts.signal);
    const op = await this.#ledger.load(operationId, opts.signal);
    if (!op) throw notFound(operationId);
    return op;
  }

  async list(
    filter: {
      project?: string;
      statuses?: readonly OperationStatus[];
      limit?: number;
      signal?: AbortSignal;
    } = {},
  ): Promise<ListedOperation[]> {
    this.#checkOpen();
    const parsed = listFilterSchema.safeParse(filter);
    if (!parsed.success) throw invalidInput('list filter', parsed.error);
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    await this.#ledger.migrate(filter.signal);
    return this.#ledger.list(
      { project: filter.project ?? null, statuses: filter.statuses ?? null, limit },
      'recent',
      filter.signal,
    );
  }

  async listRepairable(
    project: string | null,
    limit: number = DEFAULT_LIST_LIMIT,
    opts: { signal?: AbortSignal } = {},
  ): Promise<ListedOperation[]> {
    this.#checkOpen();
    if (!Number.isInteger(limit) || limit < 1) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'limit must be a positive integer');
    }
    await this.#ledger.migrate(opts.signal);
    return this.#ledger.list(
      { project, statuses: ['applying', 'compensating', 'failed', 'needs_repair'], limit },
      'oldest',
      opts.signal,
    );
  }

  startReconciler(opts: ReconcilerOptions = {}): BackgroundReconciler {
    this.#checkOpen();
    const o = parseReconcilerOptions(opts, this.options.reconciler);
    const r = startBackgroundReconciler(
      {
        ledger: this.#ledger,
        logger: this.#log,
        reconcile: async (id, ro) => {
          await this.#ledger.migrate();
          return this.reconcile(id, ro);
        },
        report: (e) => {
          if (e.outcome === 'locked') this.#telemetry.counts.reconcile.locked++;
          if (e.outcome === 'exhausted') this.#telemetry.counts.reconcile.exhausted++;
          this.#telemetry.report(e);
        },
        onStop: (x) => this.#reconcilers.delete(x),
      },
      o,
    );
    this.#reconcilers.add(r);
    return r;
  }

  on<E extends SchemaOpsEventType>(
    event: E,
    listener: (e: Extract<SchemaOpsEvent, { type: E }>) => void,
  ): () => void {
    return this.#telemetry.on(event, listener);
  }

  metrics(): SchemaOpsMetrics {
    return this.#telemetry.snapshot(this.#ledger.writes, this.#inflight.size);
  }

  /** Stops intake, stops the background reconcilers, waits for operations in flight. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#reconcilers].map((r) => r.stop()));
      await Promise.allSettled([...this.#inflight]);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- internals ----------------------------------------------------------------------------------

  #checkOpen(): void {
    if (this.#closing) throw closedError();
  }

  #checkId(id: string): void {
    if (!uuidShape.safeParse(id).success) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'an operation id is a uuid');
    }
  }

  #handlerFor(type: string, override: OperationHandler<unknown> | undefined): OperationHandler<unknown> {
    const h = override ?? this.#handlers.get(type);
    if (!h) {
      throw new SchemaOpsError(
        'SCHEMAOPS_UNKNOWN_OPERATION',
        `no handler is defined for operation type ${type}`,
        {
          details: { type },
        },
      );
    }
    return h;
  }

  #decodeRequest(handler: OperationHandler<unknown>, type: string, raw: unknown): unknown {
    let request = raw;
    if (handler.request) {
      const r = handler.request.safeParse(raw);
      if (!r.success) throw invalidInput(`request of ${type}`, r.error);
      request = r.data;
    }
    if (JSON.stringify(request ?? null) === undefined) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'the request must be JSON-serialisable', {
        details: { type },
      });
    }
    return request;
  }

  async #load(id: string): Promise<Operation> {
    const op = await this.#ledger.load(id);
    if (!op) throw notFound(id);
    return op;
  }

  #track<T>(fn: () => Promise<T>): Promise<T> {
    const p = Promise.resolve().then(fn);
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  async #lock(project: string, waitMs: number, signal: AbortSignal | undefined): Promise<ProjectLock> {
    try {
      const lock = await acquireProjectLock(
        this.#cluster,
        this.options.ledgerSchema,
        project,
        waitMs,
        signal,
      );
      this.#telemetry.counts.lock.acquired++;
      this.#telemetry.counts.lock.waitMsTotal += lock.waitedMs;
      return lock;
    } catch (e) {
      if (isSchemaOpsError(e, 'SCHEMAOPS_LOCKED')) this.#telemetry.counts.lock.timeouts++;
      throw e;
    }
  }
}

/**
 * Creates the schema-operation orchestrator on an `@x/dbx` cluster (the ledger's database). No I/O
 * happens here: the ledger schema is migrated by `migrate()` or lazily by the first call. Throws
 * SCHEMAOPS_INVALID_OPTIONS for an unknown option, a bad value or a handler without its DDL.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSchemaOps, schemaPerTenant } from '@x/schemaops';
 * import { z } from 'zod';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * // Project `blog`: the base schema `blog` and two tenant schemas, each with a `posts` table.
 * for (const schema of ['blog', 'blog_tenant_1', 'blog_tenant_2']) {
 *   await db.exec(`create schema if not exists ${schema}; create table if not exists ${schema}.posts (id int primary key)`);
 * }
 * const tenants = schemaPerTenant({ cluster: db });
 * const ops = createSchemaOps({
 *   cluster: db,
 *   tenants,
 *   operations: {
 *     add_column: {
 *       request: z.object({ column: z.string().regex(/^[a-z_]+$/) }),
 *       // Sent to the base schema and to every tenant schema, each in a transaction of its own.
 *       applySql: ({ request }) => `alter table posts add column if not exists ${request.column} text`,
 *       // Run on the targets already changed when a later one fails.
 *       compensateSql: ({ request }) => `alter table posts drop column if exists ${request.column}`,
 *     },
 *   },
 * });
 * const op = await ops.run({ project: 'blog', type: 'add_column', request: { column: 'title' } });
 * console.log(op.status, op.steps.tenant_ddl.map((t) => `${t.tenant}: ${t.state}`));
 * // committed [ 'blog_tenant_1: succeeded', 'blog_tenant_2: succeeded' ]
 * await ops.close(); // waits for operations in flight
 * await db.close();
 * ```
 */
export function createSchemaOps(options: SchemaOpsOptions): SchemaOps {
  return new SchemaOpsImpl(options);
}
