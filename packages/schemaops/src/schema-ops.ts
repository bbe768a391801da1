import { channel } from 'node:diagnostics_channel';
import { hostname } from 'node:os';
import { type Cluster, currentQuerier } from '@x/dbx';
import { z } from 'zod';
import { physicalDdlRequired, withPhysicalDdlRequired } from './context.js';
import { errorCode, errorMessage, isSchemaOpsError, SchemaOpsError } from './errors.js';
import { fanOut } from './internal/fanout.js';
import { Ledger, requestHash } from './internal/ledger.js';
import { acquireProjectLock, type ProjectLock } from './internal/lock.js';
import { findTransactionControl } from './internal/sql.js';
import {
  DEFAULT_LIST_LIMIT,
  handlerProblem,
  handlerSchema,
  type Logger,
  parseReconcilerOptions,
  parseSchemaOpsOptions,
  type ReconcilerOptions,
  type ResolvedSchemaOpsOptions,
  type SchemaOpsOptions,
} from './options.js';
import { startBackgroundReconciler } from './reconciler.js';
import type { TenantSource } from './tenants.js';
import {
  type BackgroundReconciler,
  type DdlTarget,
  type ListedOperation,
  OPERATION_STATUSES,
  type Operation,
  type OperationHandler,
  type OperationStatus,
  type OperationSummary,
  type ReconcileOptions,
  type RunInput,
  type SchemaOps,
  type SchemaOpsEvent,
  type SchemaOpsEventType,
  type SchemaOpsMetrics,
  STEP_NAMES,
  type StepContext,
  type StepMetrics,
  type StepName,
  type StepState,
} from './types.js';

/** diagnostics_channel channels, one per event type. */
export const CHANNELS = Object.freeze({
  step: channel('x:schemaops:step'),
  operation: channel('x:schemaops:operation'),
  reconcile: channel('x:schemaops:reconcile'),
  afterCommitFailed: channel('x:schemaops:after-commit'),
});

const OWNER = `${hostname()}:${process.pid}`;

const signalShape = z.custom<AbortSignal>((v) => v instanceof AbortSignal, {
  message: 'signal must be an AbortSignal',
});

const runInputSchema = z.object({
  project: z.string().min(1).max(200),
  type: z.string().min(1).max(200),
  request: z.unknown(),
  skipBaseDdl: z.boolean().optional(),
  idempotencyKey: z.string().min(1).max(255).optional(),
  physicalDdlRequired: z.boolean().optional(),
  handler: handlerSchema.optional(),
  concurrency: z.number().int().positive().max(256).optional(),
  signal: signalShape.optional(),
});

const reconcileOptionsSchema = z.object({
  handler: handlerSchema.optional(),
  concurrency: z.number().int().positive().max(256).optional(),
  lockWaitMs: z.number().int().nonnegative().optional(),
  signal: signalShape.optional(),
});

const uuidShape = z.uuid();

function invalidInput(what: string, error: z.ZodError): SchemaOpsError {
  return new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', `invalid ${what}: ${z.prettifyError(error)}`, {
    details: { issues: error.issues },
  });
}

interface Failure {
  step: StepName;
  tenant: string | null;
  error: unknown;
  /** The user's signal aborted the run (the error is its reason). */
  aborted: boolean;
}

interface Outcome {
  status: OperationStatus;
  /** What run()/reconcile() throw when the status is not what they promise. */
  error: unknown;
}

/** Everything one drive of an operation needs. */
interface Drive {
  op: Operation;
  handler: OperationHandler<unknown>;
  lock: ProjectLock;
  /** User signal + lock loss: stops the forward run. */
  stop: AbortSignal;
  user: AbortSignal | undefined;
  concurrency: number;
  ctx: StepContext<unknown>;
  /** Targets whose DDL transaction committed in this drive ('' = base). */
  committed: Set<string>;
  /** Journal folds started in this drive (run alongside the next steps; awaited before it ends). */
  folds: Array<Promise<void>>;
}

const BASE_KEY = '\u0000base';

function emptyStepMetrics(): StepMetrics {
  return { succeeded: 0, failed: 0, compensated: 0, compensationFailed: 0, totalMs: 0 };
}

class SchemaOpsImpl implements SchemaOps {
  readonly options: Readonly<ResolvedSchemaOpsOptions>;
  readonly #cluster: Cluster;
  readonly #tenants: TenantSource;
  readonly #ledger: Ledger;
  readonly #handlers = new Map<string, OperationHandler<unknown>>();
  readonly #listeners = new Map<SchemaOpsEventType, Set<(e: SchemaOpsEvent) => void>>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #reconcilers = new Set<BackgroundReconciler>();
  readonly #log: Logger | undefined;
  #closing: Promise<void> | null = null;
  readonly #m = {
    operations: { started: 0, committed: 0, compensated: 0, failed: 0, needsRepair: 0, deduplicated: 0 },
    steps: Object.fromEntries(STEP_NAMES.map((s) => [s, emptyStepMetrics()])) as Record<
      StepName,
      StepMetrics
    >,
    reconcile: { attempts: 0, repaired: 0, compensated: 0, failed: 0, locked: 0, exhausted: 0 },
    lock: { acquired: 0, timeouts: 0, waitMsTotal: 0 },
  };

  constructor(options: SchemaOpsOptions) {
    this.options = parseSchemaOpsOptions(options);
    this.#cluster = this.options.cluster;
    this.#tenants = this.options.tenants;
    this.#log = this.options.logger;
    this.#ledger = new Ledger(this.#cluster, this.options.ledgerSchema);
    for (const [type, h] of Object.entries(this.options.operations)) this.#handlers.set(type, h);
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
          this.#m.operations.deduplicated++;
          if (existing.status === 'committed') return await this.#load(existing.id);
          if (existing.status === 'applying' || existing.status === 'compensating') {
            // We hold the project lock, so its owner is gone: finish it rather than start a twin.
            const outcome = await this.#resume(existing.id, handler, lock, signal, concurrency);
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
      this.#m.operations.started++;
      const outcome = await this.#drive(op, handler, lock, signal, concurrency);
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
      this.#m.reconcile.attempts++;
      const outcome = await this.#resume(
        operationId,
        handler,
        lock,
        signal,
        o.concurrency ?? this.options.concurrency,
      );
      if (outcome.status === 'committed') this.#m.reconcile.repaired++;
      else if (outcome.status === 'compensated') this.#m.reconcile.compensated++;
      else this.#m.reconcile.failed++;
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
    const limit = filter.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isInteger(limit) || limit < 1) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'limit must be a positive integer');
    }
    if (filter.statuses?.some((s) => !OPERATION_STATUSES.includes(s))) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'unknown status in statuses');
    }
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
          if (e.outcome === 'locked') this.#m.reconcile.locked++;
          if (e.outcome === 'exhausted') this.#m.reconcile.exhausted++;
          this.#report(e);
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
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    const l = listener as (e: SchemaOpsEvent) => void;
    set.add(l);
    return () => {
      set.delete(l);
    };
  }

  metrics(): SchemaOpsMetrics {
    const m = this.#m;
    return {
      operations: { ...m.operations },
      steps: Object.fromEntries(STEP_NAMES.map((s) => [s, { ...m.steps[s] }])) as Record<
        StepName,
        StepMetrics
      >,
      reconcile: { ...m.reconcile },
      lock: { ...m.lock },
      ledgerWrites: this.#ledger.writes,
      running: this.#inflight.size,
    };
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
      this.#m.lock.acquired++;
      this.#m.lock.waitMsTotal += lock.waitedMs;
      return lock;
    } catch (e) {
      if (isSchemaOpsError(e, 'SCHEMAOPS_LOCKED')) this.#m.lock.timeouts++;
      throw e;
    }
  }

  #report(e: SchemaOpsEvent): void {
    const ch = CHANNELS[e.type];
    if (ch.hasSubscribers) ch.publish(e);
    const set = this.#listeners.get(e.type);
    if (set) {
      for (const l of [...set]) {
        try {
          l(e);
        } catch (err) {
          this.#log?.warn({ err: errorMessage(err), event: e.type }, 'schemaops event listener threw');
        }
      }
    }
  }

  #stepEvent(
    d: Drive,
    step: StepName,
    tenant: string | null,
    state: StepState,
    phase: 'apply' | 'compensate',
    started: number,
    error: unknown,
  ): void {
    const durationMs = performance.now() - started;
    const m = this.#m.steps[step];
    m.totalMs += durationMs;
    if (phase === 'apply') {
      if (state === 'succeeded') m.succeeded++;
      else m.failed++;
    } else if (state === 'compensated') m.compensated++;
    else m.compensationFailed++;
    this.#report({
      type: 'step',
      operationId: d.op.id,
      project: d.op.project,
      step,
      tenant,
      state,
      phase,
      durationMs,
      error: error === null ? null : errorMessage(error),
    });
  }

  /** Records a step's state where a failure to record must not hide the original error. */
  async #markQuietly(
    id: string,
    step: StepName,
    tenant: string | null,
    state: StepState,
    error: string,
    countAttempt: boolean,
  ): Promise<void> {
    try {
      await this.#ledger.markStep(this.#cluster, id, step, tenant, state, error, countAttempt);
    } catch (e) {
      this.#log?.warn({ err: errorMessage(e), operationId: id, step }, 'schemaops could not record a step');
    }
  }

  /** Folds the tenant journal into `steps`; a failure only leaves it for later (reads see both). */
  async #foldQuietly(id: string): Promise<void> {
    try {
      await this.#ledger.foldTenantEvents(id);
    } catch (e) {
      this.#log?.warn({ err: errorMessage(e), operationId: id }, 'schemaops could not fold tenant states');
    }
  }

  /** Puts an unfinished operation back in motion (new attempt) and drives it from its first unfinished step. */
  async #resume(
    id: string,
    handler: OperationHandler<unknown>,
    lock: ProjectLock,
    signal: AbortSignal | undefined,
    concurrency: number,
  ): Promise<Outcome> {
    const before = await this.#load(id);
    // Re-read under the lock: `request` comes from the ledger, decoded by the handler's schema.
    const direction =
      before.status === 'compensating'
        ? 'backward'
        : before.status === 'needs_repair'
          ? before.direction
          : 'forward';
    await this.#ledger.setStatus(id, {
      status: direction === 'forward' ? 'applying' : 'compensating',
      direction,
      newAttempt: true,
      finished: false,
      owner: OWNER,
    });
    const op = await this.#load(id);
    return this.#drive(op, handler, lock, signal, concurrency);
  }

  /**
   * Runs an operation from its ledger state: forward from the first step that has not succeeded
   * (skipping tenants that already did), or backward (compensation) when it was compensating. The one
   * code path for a new run, a resume after a crash and a repair.
   */
  async #drive(
    op: Operation,
    handler: OperationHandler<unknown>,
    lock: ProjectLock,
    user: AbortSignal | undefined,
    concurrency: number,
  ): Promise<Outcome> {
    const started = performance.now();
    const stop = user ? AbortSignal.any([user, lock.signal]) : lock.signal;
    const request = this.#decodeRequest(handler, op.type, op.request);
    const d: Drive = {
      op,
      handler,
      lock,
      stop,
      user,
      concurrency,
      ctx: Object.freeze({
        operationId: op.id,
        project: op.project,
        type: op.type,
        request,
        attempt: op.attemptCount,
        signal: stop,
      }),
      committed: new Set(),
      folds: [],
    };
    try {
      const outcome = op.direction === 'forward' ? await this.#forward(d) : await this.#compensate(d, null);
      await Promise.all(d.folds);
      this.#operationEvent(d, outcome, started);
      return outcome;
    } catch (e) {
      await Promise.all(d.folds);
      if (lock.signal.aborted) throw lock.signal.reason;
      if (isSchemaOpsError(e)) throw e;
      // A ledger write failed: the row is left as it was (applying / compensating) for a reconcile.
      throw new SchemaOpsError(
        'SCHEMAOPS_LEDGER_FAILED',
        `the ledger could not be updated: ${errorMessage(e)}`,
        {
          retryable: true,
          cause: e,
          details: { operationId: op.id, project: op.project },
        },
      );
    }
  }

  #operationEvent(d: Drive, outcome: Outcome, started: number): void {
    const m = this.#m.operations;
    if (outcome.status === 'committed') m.committed++;
    else if (outcome.status === 'compensated') m.compensated++;
    else if (outcome.status === 'failed') m.failed++;
    else if (outcome.status === 'needs_repair') m.needsRepair++;
    const fields = {
      operationId: d.op.id,
      project: d.op.project,
      type: d.op.type,
      attempt: d.op.attemptCount,
    };
    if (outcome.status === 'committed')
      this.#log?.info({ ...fields, status: outcome.status }, 'schemaops operation committed');
    else {
      this.#log?.warn(
        { ...fields, status: outcome.status, err: errorMessage(outcome.error) },
        `schemaops operation ended ${outcome.status}`,
      );
    }
    this.#report({
      type: 'operation',
      operationId: d.op.id,
      project: d.op.project,
      operationType: d.op.type,
      status: outcome.status,
      attempt: d.op.attemptCount,
      durationMs: performance.now() - started,
      error: outcome.error === null ? null : errorMessage(outcome.error),
    });
  }

  #checkLock(d: Drive): void {
    if (d.lock.signal.aborted) throw d.lock.signal.reason;
  }

  /** A step failure, or the user's abort when that is what stopped it (then the error is the abort reason). */
  #failure(d: Drive, step: StepName, tenant: string | null, error: unknown): Failure {
    return this.#userAbort(d, step) ?? { step, tenant, error, aborted: false };
  }

  #userAbort(d: Drive, step: StepName): Failure | null {
    if (d.user?.aborted) return { step, tenant: null, error: d.user.reason, aborted: true };
    return null;
  }

  async #forward(d: Drive): Promise<Outcome> {
    const { op } = d;
    let failure: Failure | null = null;

    // 1. base project DDL (one transaction: a failure leaves nothing of it behind).
    if (op.steps.base_project_ddl.state !== 'succeeded') {
      this.#checkLock(d);
      failure = this.#userAbort(d, 'base_project_ddl');
      if (!failure) {
        try {
          await this.#onTarget(d, { kind: 'base' }, 'apply');
        } catch (e) {
          this.#checkLock(d);
          failure = this.#failure(d, 'base_project_ddl', null, e);
        }
      }
      // The base failed before any tenant ran; unless its commit landed but was not recorded, nothing is applied.
      if (failure && !d.committed.has(BASE_KEY)) return this.#failed(d, failure);
    }

    // 2. tenant DDL, bounded concurrency, a transaction and a ledger entry per tenant.
    if (!failure) {
      const todo = op.steps.tenant_ddl.filter((t) => t.state !== 'succeeded').map((t) => t.tenant);
      failure = this.#userAbort(d, 'tenant_ddl');
      if (!failure && todo.length > 0) {
        const r = await fanOut(
          todo,
          d.concurrency,
          (tenant) => this.#onTarget(d, { kind: 'tenant', tenant }, 'apply'),
          {
            stopOnError: this.options.failFast,
            signal: d.stop,
          },
        );
        d.folds.push(this.#foldQuietly(op.id));
        this.#checkLock(d);
        const first = r.failures[0];
        if (d.user?.aborted) {
          failure = this.#userAbort(d, 'tenant_ddl');
        } else if (first) {
          failure = {
            step: 'tenant_ddl',
            tenant: first.item,
            error: first.error,
            aborted: d.user?.aborted === true,
          };
        } else if (r.notStarted.length > 0) {
          failure = this.#userAbort(d, 'tenant_ddl');
        }
      }
    }

    // 3. system metadata, in a transaction on the ledger cluster that also records the step.
    if (!failure && op.steps.system_schema.state !== 'succeeded') {
      this.#checkLock(d);
      failure = this.#userAbort(d, 'system_schema');
      if (!failure) {
        const t0 = performance.now();
        try {
          await this.#cluster.runTx(async (tx) => {
            await d.handler.persistSystem?.({ ...d.ctx, tx });
            await this.#ledger.markStep(tx, op.id, 'system_schema', null, 'succeeded', null, true);
          });
          this.#stepEvent(d, 'system_schema', null, 'succeeded', 'apply', t0, null);
        } catch (e) {
          this.#checkLock(d);
          await this.#markQuietly(op.id, 'system_schema', null, 'failed', errorMessage(e), true);
          this.#stepEvent(d, 'system_schema', null, 'failed', 'apply', t0, e);
          failure = this.#failure(d, 'system_schema', null, e);
        }
      }
    }

    if (failure) return this.#compensate(d, failure);

    // 4. cache: past the point of no return (DDL and metadata are durable); a failure is repaired, not undone.
    if (op.steps.cache.state !== 'succeeded') {
      this.#checkLock(d);
      const t0 = performance.now();
      try {
        // Past the point of no return the user's signal is no longer looked at.
        await d.handler.refreshCache?.({ ...d.ctx, signal: d.lock.signal });
        await this.#ledger.markStep(this.#cluster, op.id, 'cache', null, 'succeeded', null, true);
        this.#stepEvent(d, 'cache', null, 'succeeded', 'apply', t0, null);
      } catch (e) {
        this.#checkLock(d);
        await this.#markQuietly(op.id, 'cache', null, 'failed', errorMessage(e), true);
        this.#stepEvent(d, 'cache', null, 'failed', 'apply', t0, e);
        const error = stepFailed(
          op,
          { step: 'cache', tenant: null, error: e, aborted: false },
          'needs_repair',
        );
        await this.#ledger.setStatus(op.id, {
          status: 'needs_repair',
          direction: 'forward',
          lastError: error.message,
          lastErrorCode: errorCode(e),
          finished: false,
        });
        return { status: 'needs_repair', error };
      }
    }

    // 5. committed, then afterCommit (never fails the operation).
    await this.#ledger.setStatus(op.id, {
      status: 'committed',
      direction: 'forward',
      lastError: null,
      lastErrorCode: null,
      compensationError: null,
      finished: true,
    });
    await this.#afterCommit(d);
    return { status: 'committed', error: null };
  }

  async #failed(d: Drive, failure: Failure): Promise<Outcome> {
    const error = stepFailed(d.op, failure, 'failed');
    await this.#ledger.setStatus(d.op.id, {
      status: 'failed',
      direction: 'forward',
      lastError: error.message,
      lastErrorCode: errorCode(failure.error),
      finished: true,
    });
    return { status: 'failed', error: failure.aborted ? failure.error : error };
  }

  async #afterCommit(d: Drive): Promise<void> {
    const hook = d.handler.afterCommit;
    if (!hook) return;
    const flag = d.op.physicalDdlRequired;
    try {
      await withPhysicalDdlRequired(flag, () =>
        hook.call(d.handler, { ...d.ctx, signal: d.lock.signal, physicalDdlRequired: flag }),
      );
    } catch (e) {
      this.#log?.warn({ err: errorMessage(e), operationId: d.op.id }, 'schemaops afterCommit failed');
      this.#report({
        type: 'afterCommitFailed',
        operationId: d.op.id,
        project: d.op.project,
        error: errorMessage(e),
      });
    }
  }

  /**
   * Undoes what is applied: the base, then every tenant that succeeded (or committed in this drive but
   * could not be recorded). Runs to the end whatever the user's signal says, so the final status is true:
   * `compensated`, or `needs_repair` when anything could not be undone.
   */
  async #compensate(d: Drive, failure: Failure | null): Promise<Outcome> {
    const id = d.op.id;
    const forwardError = failure ? stepFailed(d.op, failure, 'compensating') : null;
    await this.#ledger.setStatus(id, {
      status: 'compensating',
      direction: 'backward',
      ...(forwardError ? { lastError: forwardError.message, lastErrorCode: errorCode(failure?.error) } : {}),
      finished: false,
    });
    // Re-read: the forward run changed tenant states.
    const op = await this.#load(id);
    const problems: string[] = [];
    const canUndo = d.handler.compensate !== undefined || d.handler.compensateSql !== undefined;

    const base = op.steps.base_project_ddl;
    if (base.state === 'succeeded' || d.committed.has(BASE_KEY)) {
      if (op.skipBaseDdl) {
        await this.#ledger.markStep(this.#cluster, id, 'base_project_ddl', null, 'compensated', null, false);
      } else if (!canUndo) {
        problems.push('base_project_ddl: no compensate callback');
      } else {
        try {
          await this.#onTarget(d, { kind: 'base' }, 'compensate');
        } catch (e) {
          this.#checkLock(d);
          problems.push(`base_project_ddl: ${errorMessage(e)}`);
        }
      }
    }

    const undo = op.steps.tenant_ddl
      .filter((t) => t.state === 'succeeded' || d.committed.has(t.tenant))
      .map((t) => t.tenant);
    if (undo.length > 0) {
      if (!canUndo) {
        problems.push(`tenant_ddl: no compensate callback for ${undo.length} tenant(s)`);
      } else {
        const r = await fanOut(
          undo,
          d.concurrency,
          (tenant) => this.#onTarget(d, { kind: 'tenant', tenant }, 'compensate'),
          {
            stopOnError: false,
            signal: d.lock.signal,
          },
        );
        d.folds.push(this.#foldQuietly(id));
        this.#checkLock(d);
        for (const f of r.failures) problems.push(`tenant ${f.item}: ${errorMessage(f.error)}`);
      }
    }

    if (problems.length === 0) {
      await this.#ledger.setStatus(id, {
        status: 'compensated',
        direction: 'backward',
        compensationError: null,
        finished: true,
      });
      if (!failure) return { status: 'compensated', error: null };
      return {
        status: 'compensated',
        error: failure.aborted ? failure.error : stepFailed(op, failure, 'compensated'),
      };
    }
    const compensationError =
      problems.slice(0, 20).join('; ') + (problems.length > 20 ? `; … ${problems.length - 20} more` : '');
    await this.#ledger.setStatus(id, {
      status: 'needs_repair',
      direction: 'backward',
      compensationError,
      finished: false,
    });
    return {
      status: 'needs_repair',
      error: new SchemaOpsError(
        'SCHEMAOPS_COMPENSATION_FAILED',
        `operation ${id}: compensation failed (${problems.length} target(s)); it needs repair`,
        {
          cause: failure?.error,
          details: {
            operationId: id,
            project: op.project,
            status: 'needs_repair',
            step: failure?.step ?? null,
            tenant: failure?.tenant ?? null,
            problems: problems.slice(0, 20),
          },
        },
      ),
    };
  }

  /**
   * Applies or compensates one target in a transaction of its own and records its step. When the
   * target lives on the ledger's cluster the record is written in that same transaction.
   */
  async #onTarget(d: Drive, target: DdlTarget, phase: 'apply' | 'compensate'): Promise<void> {
    const { op, handler } = d;
    const step: StepName = target.kind === 'base' ? 'base_project_ddl' : 'tenant_ddl';
    const tenant = target.kind === 'tenant' ? target.tenant : null;
    const key = tenant ?? BASE_KEY;
    const okState: StepState = phase === 'apply' ? 'succeeded' : 'compensated';
    const callback = phase === 'apply' ? handler.applyDdl : handler.compensate;
    const sqlOf = phase === 'apply' ? handler.applySql : handler.compensateSql;
    // The forward run stops on the user's signal; compensation only on losing the lock.
    const signal = phase === 'apply' ? d.stop : d.lock.signal;
    const atomic = this.#tenants.sharesCluster(this.#cluster, op.project, target);
    const t0 = performance.now();
    let committed = false;
    try {
      // Recorded first in the target's own transaction: it commits only if the DDL does.
      const firstStatement = atomic
        ? this.#ledger.markStepStatement(op.id, step, tenant, okState, null, phase === 'apply')
        : undefined;
      // The target's statements get a signal only when the caller can abort the run: dbx's abortable
      // path costs ~20 µs of CPU per statement, a quarter of a tenant's client time here. Losing the
      // lock (or compensation, which is never cancelled) lets the statements in flight finish; the
      // fan-out starts no new one and the operation stops at the step boundary.
      const transport = phase === 'apply' && d.user ? { signal } : {};
      const opts = firstStatement ? { ...transport, firstStatement } : transport;
      if (sqlOf) {
        // SQL text: setup, ledger record and DDL go as one multi-statement query (one round trip).
        const text = (schema: string | null): string => {
          const sql = sqlOf.call(handler, { ...d.ctx, signal, target, schema });
          if (typeof sql !== 'string') {
            throw new SchemaOpsError(
              'SCHEMAOPS_INVALID_INPUT',
              `${sqlOf.name || 'applySql'} must return a string`,
              {
                details: { operationId: op.id, step, tenant },
              },
            );
          }
          const control = findTransactionControl(sql);
          if (control) {
            // It would commit the ledger record with half the DDL, or leave a transaction open
            // on a pooled connection: the target's SQL runs as one transaction that schemaops owns.
            throw new SchemaOpsError(
              'SCHEMAOPS_INVALID_INPUT',
              `${sqlOf.name || 'applySql'} must not contain transaction control (${control.keyword} in statement ${control.index + 1})`,
              { details: { operationId: op.id, step, tenant } },
            );
          }
          return sql;
        };
        if (this.#tenants.execSql) await this.#tenants.execSql(op.project, target, text, opts);
        else await this.#tenants.withTarget(op.project, target, (tx, schema) => tx.exec(text(schema)), opts);
      } else if (callback) {
        await this.#tenants.withTarget(
          op.project,
          target,
          (tx, schema) => callback.call(handler, { ...d.ctx, signal, tx, target, schema }),
          opts,
        );
      } else {
        throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'no compensate callback');
      }
      committed = true;
      if (phase === 'apply') d.committed.add(key);
      else d.committed.delete(key);
      if (!atomic)
        await this.#ledger.markStep(this.#cluster, op.id, step, tenant, okState, null, phase === 'apply');
    } catch (e) {
      if (!committed) {
        // apply: the step failed (its transaction rolled back); compensate: it is still applied.
        const state: StepState = phase === 'apply' ? 'failed' : 'succeeded';
        const msg = phase === 'apply' ? errorMessage(e) : `compensation: ${errorMessage(e)}`;
        await this.#markQuietly(op.id, step, tenant, state, msg, phase === 'apply');
      }
      this.#stepEvent(d, step, tenant, phase === 'apply' ? 'failed' : 'succeeded', phase, t0, e);
      throw e;
    }
    this.#stepEvent(d, step, tenant, okState, phase, t0, null);
  }
}

function checkTenants(tenants: readonly string[]): void {
  const seen = new Set<string>();
  for (const t of tenants) {
    if (typeof t !== 'string' || t.length === 0) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'the tenant source returned an empty tenant id');
    }
    if (seen.has(t)) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'the tenant source returned a tenant twice', {
        details: { tenant: t },
      });
    }
    seen.add(t);
  }
}

function stepFailed(
  op: { id: string; project: string },
  f: Failure,
  status: OperationStatus,
): SchemaOpsError {
  const where = f.tenant === null ? f.step : `${f.step} (tenant ${f.tenant})`;
  return new SchemaOpsError(
    'SCHEMAOPS_STEP_FAILED',
    `operation ${op.id}: ${where} failed: ${errorMessage(f.error)}`,
    {
      cause: f.error,
      details: {
        operationId: op.id,
        project: op.project,
        step: f.step,
        tenant: f.tenant,
        status,
        errorCode: errorCode(f.error),
      },
    },
  );
}

function replayError(s: OperationSummary): SchemaOpsError {
  const code =
    s.status === 'needs_repair' && s.compensationError !== null
      ? 'SCHEMAOPS_COMPENSATION_FAILED'
      : 'SCHEMAOPS_STEP_FAILED';
  return new SchemaOpsError(
    code,
    `operation ${s.id} already ended ${s.status}: ${s.lastError ?? 'no error recorded'}`,
    {
      details: {
        operationId: s.id,
        project: s.project,
        status: s.status,
        replayed: true,
        errorCode: s.lastErrorCode,
      },
    },
  );
}

function closedError(): SchemaOpsError {
  return new SchemaOpsError('SCHEMAOPS_CLOSED', 'schemaops is closed');
}

function notFound(id: string): SchemaOpsError {
  return new SchemaOpsError('SCHEMAOPS_NOT_FOUND', `no operation ${id} in the ledger`, {
    details: { operationId: id },
  });
}

/**
 * Creates the schema-operation orchestrator on an @x/dbx cluster (the ledger's database). No I/O
 * happens here: the ledger schema is migrated by `migrate()` or lazily by the first call.
 */
export function createSchemaOps(options: SchemaOpsOptions): SchemaOps {
  return new SchemaOpsImpl(options);
}
