import diagnostics from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import type { z } from 'zod';
import { isWriteCoordinatorError, sqliteCodeOf, toJobError, WriteCoordinatorError } from '../errors.js';
import { type Logger, MAX_REQUEST_ID_LENGTH, type ResolvedWriteCoordinatorOptions } from '../options.js';
import type {
  CommitEvent,
  JobFn,
  NamedJob,
  SqliteDatabase,
  SubmitOptions,
  WriteCoordinator,
  WriteCoordinatorMetrics,
  WriteResult,
} from '../types.js';
import { ChangeStream } from './changes.js';
import { BackgroundCheckpointer } from './checkpointer.js';
import { Deque } from './deque.js';
import { LatencyReservoir } from './reservoir.js';
import {
  claimFence,
  configureDatabase,
  fencedError,
  prepareStore,
  readMark,
  readSeq,
  type Statements,
  type StoredRequest,
  synchronousFor,
} from './store.js';

/** diagnostics_channel names (see README). */
export const BATCH_CHANNEL = 'x:writecoordinator:batch';
export const CLOSE_CHANNEL = 'x:writecoordinator:close';
const batchChannel = diagnostics.channel(BATCH_CHANNEL);
const closeChannel = diagnostics.channel(CLOSE_CHANNEL);

/** How long one turn of the writer loop may keep committing batches before it yields. */
const TICK_BUDGET_MS = 2;

enum State {
  Waiting = 0, // waiting for queue space
  Queued = 1,
  Running = 2,
  Done = 3,
}

class Job {
  state: State = State.Queued;
  value: unknown = undefined;
  seq = 0;
  replayed = false;
  resolve!: (r: WriteResult<unknown>) => void;
  reject!: (e: unknown) => void;
  onAbort: (() => void) | null = null;
  timer: NodeJS.Timeout | null = null;
  /** Submit time for the latency reservoir, or -1 when this job is not sampled. */
  t0 = -1;
  constructor(
    readonly fn: (db: SqliteDatabase) => unknown,
    readonly method: string | null,
    readonly requestId: string | null,
    readonly full: boolean,
    readonly exclusive: boolean,
    readonly deadline: number,
    readonly signal: AbortSignal | null,
  ) {}
}

interface Registered {
  schema: z.ZodType<unknown>;
  handler: (db: SqliteDatabase, params: unknown) => unknown;
}

const EMPTY_OPTS: SubmitOptions = Object.freeze({});
/** The outcome of a batch run where no job ended the transaction (shared: no allocation per batch). */
const OK: { kind: 'ok' } = Object.freeze({ kind: 'ok' });
const TAMPERED: { kind: 'tampered' } = Object.freeze({ kind: 'tampered' });
const SETTLED = Promise.resolve();

// One executor for every job's promise (no closure per submit): it hands the resolving functions
// over through these two slots, which are read right after `new Promise` returns.
let capturedResolve: ((r: WriteResult<unknown>) => void) | null = null;
let capturedReject: ((e: unknown) => void) | null = null;
function capture(resolve: (r: WriteResult<unknown>) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

function isThenable(v: unknown): boolean {
  return (
    v !== null &&
    (typeof v === 'object' || typeof v === 'function') &&
    typeof (v as { then?: unknown }).then === 'function'
  );
}

export class Coordinator implements WriteCoordinator {
  readonly options: Readonly<ResolvedWriteCoordinatorOptions>;
  readonly #db: SqliteDatabase;
  readonly #st: Statements;
  readonly #log: Logger;
  readonly #registry = new Map<string, Registered>();
  readonly #queue = new Deque<Job>();
  readonly #waiters = new Deque<Job>();
  readonly #listeners = new Set<(e: CommitEvent) => void>();
  readonly #streams = new Set<ChangeStream>();
  readonly #latency: LatencyReservoir;
  readonly #baseSync: number;
  #seq: number;
  /** The last per-job marker written (see #runIsolated). */
  #mark: number;
  /** The fencing epoch bound into every sequence bump (no check without `fencingEpoch`). */
  readonly #fenceBound: number;
  /** Set once a newer writer fenced this one off: every submit is refused with it. */
  #fenced: WriteCoordinatorError | null = null;
  #depth = 0; // live jobs in #queue
  #waiting = 0; // live jobs in #waiters
  #scheduled: NodeJS.Immediate | null = null;
  /** A run of the loop is queued as a microtask of the current turn (see #schedule). */
  #microScheduled = false;
  /** When the current turn's budget ends (performance.now() time); 0 outside a turn's budget. */
  #turnEnd = 0;
  #delayed: NodeJS.Timeout | null = null;
  #closing = false;
  #closed: Promise<void> | null = null;
  #finishClose: (() => void) | null = null;
  #drainTimer: NodeJS.Timeout | null = null;
  #lastPrune = 0;
  /** Started with the first batch; null when there is none (disabled, not better-sqlite3, closed). */
  #checkpointer: BackgroundCheckpointer | null | undefined = undefined;
  #sampled = 0;
  #recordedSincePrune = 0;
  // metrics
  #accepted = 0;
  #completed = 0;
  #replayed = 0;
  #failed = 0;
  #expired = 0;
  #aborted = 0;
  #rejected = 0;
  #dropped = 0;
  #maxDepth = 0;
  #batches = 0;
  #batchedJobs = 0;
  #isolated = 0;

  constructor(options: Readonly<ResolvedWriteCoordinatorOptions>) {
    this.options = options;
    this.#db = options.database;
    this.#log = options.logger;
    this.#latency = new LatencyReservoir(options.latencyReservoirSize);
    this.#baseSync = synchronousFor(options.durability);
    // better-sqlite3 is synchronous and the database is already open, so settings and tables are
    // checked here: a read-only or non-WAL database fails at creation, not at the first write.
    configureDatabase(this.#db, options.durability, options.busyTimeoutMs);
    this.#st = prepareStore(this.#db);
    this.#fenceBound = options.fencingEpoch ?? Number.MAX_SAFE_INTEGER;
    if (options.fencingEpoch !== undefined) claimFence(this.#db, this.#st, options.fencingEpoch);
    this.#seq = readSeq(this.#st);
    this.#mark = readMark(this.#st);
    this.#prune(Date.now());
  }

  get seq(): number {
    return this.#seq;
  }

  register<P>(
    method: string,
    paramsSchema: z.ZodType<P>,
    handler: (db: SqliteDatabase, params: P) => unknown,
  ): void {
    if (typeof method !== 'string' || method.length === 0) {
      throw new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'method must be a non-empty string');
    }
    if (this.#registry.has(method)) {
      throw new WriteCoordinatorError(
        'WRITECOORDINATOR_METHOD_EXISTS',
        `method ${method} is already registered`,
        {
          details: { method },
        },
      );
    }
    this.#registry.set(method, {
      schema: paramsSchema as z.ZodType<unknown>,
      handler: handler as (db: SqliteDatabase, params: unknown) => unknown,
    });
  }

  submit<T>(job: JobFn<T> | NamedJob, opts?: SubmitOptions): Promise<WriteResult<T>> {
    return this.#submit(job, opts ?? EMPTY_OPTS, false) as Promise<WriteResult<T>>;
  }

  runExclusive<T>(fn: JobFn<T>, opts?: SubmitOptions): Promise<WriteResult<T>> {
    return this.#submit(fn, opts ?? EMPTY_OPTS, true) as Promise<WriteResult<T>>;
  }

  #refuse(error: WriteCoordinatorError): Promise<never> {
    this.#rejected++;
    return Promise.reject(error);
  }

  #submit(
    job: JobFn<unknown> | NamedJob,
    opts: SubmitOptions,
    exclusive: boolean,
  ): Promise<WriteResult<unknown>> {
    if (this.#fenced !== null) return this.#refuse(this.#fenced);
    if (this.#closing) {
      return this.#refuse(
        new WriteCoordinatorError('WRITECOORDINATOR_CLOSED', 'the write coordinator is closed', {
          details: { applied: false },
        }),
      );
    }
    let fn: (db: SqliteDatabase) => unknown;
    let method: string | null = null;
    if (typeof job === 'function') {
      fn = job;
    } else if (typeof job === 'object' && job !== null && typeof job.method === 'string' && !exclusive) {
      method = job.method;
      const reg = this.#registry.get(method);
      if (reg === undefined) {
        return this.#refuse(
          new WriteCoordinatorError('WRITECOORDINATOR_METHOD_NOT_FOUND', `no handler for method ${method}`, {
            details: { method, applied: false },
          }),
        );
      }
      const parsed = reg.schema.safeParse(job.params);
      if (!parsed.success) {
        return this.#refuse(
          new WriteCoordinatorError(
            'WRITECOORDINATOR_INVALID_PARAMS',
            `invalid params for method ${method}`,
            {
              details: { method, issues: parsed.error.issues, applied: false },
              cause: parsed.error,
            },
          ),
        );
      }
      const params = parsed.data;
      const handler = reg.handler;
      fn = (db) => handler(db, params);
    } else {
      return this.#refuse(
        new WriteCoordinatorError(
          'WRITECOORDINATOR_INVALID_PARAMS',
          exclusive ? 'runExclusive takes a function' : 'a job is a function or { method, params }',
        ),
      );
    }
    const { signal, deadline, requestId, durability } = opts;
    if (
      opts !== EMPTY_OPTS &&
      ((requestId !== undefined &&
        (typeof requestId !== 'string' ||
          requestId.length === 0 ||
          requestId.length > MAX_REQUEST_ID_LENGTH)) ||
        (deadline !== undefined && (typeof deadline !== 'number' || Number.isNaN(deadline))) ||
        (durability !== undefined && durability !== 'normal' && durability !== 'full'))
    ) {
      return this.#refuse(
        new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'invalid submit options', {
          details: {
            requestIdLength: typeof requestId === 'string' ? requestId.length : null,
            durability,
            applied: false,
          },
        }),
      );
    }
    // Refused at once when both the queue and the waiting room are full: the cheapest path, as it
    // is the hot path of an overloaded writer.
    if (
      (this.#depth >= this.options.queueSize || this.#waiting > 0) &&
      this.#waiting >= this.options.maxWaiting &&
      !(deadline !== undefined && deadline <= Date.now())
    ) {
      return this.#refuse(this.#queueFull());
    }
    if (signal?.aborted) {
      return this.#refuse(
        new WriteCoordinatorError('WRITECOORDINATOR_ABORTED', 'the submit was aborted before it was queued', {
          details: { applied: false },
          cause: signal.reason,
        }),
      );
    }
    const j = new Job(
      fn,
      method,
      requestId ?? null,
      durability === 'full',
      exclusive,
      deadline ?? Number.POSITIVE_INFINITY,
      signal ?? null,
    );
    // Latency is sampled: every job until the reservoir has filled once, then one job in eight
    // (reading the clock per job costs a measurable share of the hot path).
    const n = this.#sampled++;
    if (n < this.options.latencyReservoirSize || (n & 7) === 0) j.t0 = performance.now();
    const promise = new Promise<WriteResult<unknown>>(capture);
    j.resolve = capturedResolve!;
    j.reject = capturedReject!;
    if (deadline !== undefined && deadline <= Date.now()) {
      this.#accepted++;
      this.#expire(j);
      return promise;
    }
    if (this.#depth < this.options.queueSize && this.#waiting === 0) {
      this.#accepted++;
      this.#enqueue(j);
    } else {
      this.#wait(j); // there is room: checked above
    }
    if (signal !== undefined) {
      j.onAbort = () => this.#abort(j);
      signal.addEventListener('abort', j.onAbort, { once: true });
    }
    return promise;
  }

  /**
   * QUEUE_FULL is made without a stack trace: under overload it is created for most submits, and
   * capturing a stack costs more than everything else on that path. Its `code` says all there is.
   */
  #queueFull(cause?: unknown): WriteCoordinatorError {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      return new WriteCoordinatorError('WRITECOORDINATOR_QUEUE_FULL', 'the write queue is full', {
        retryable: true,
        details: { queueSize: this.options.queueSize, waiting: this.#waiting, applied: false },
        cause,
      });
    } finally {
      Error.stackTraceLimit = limit;
    }
  }

  #enqueue(j: Job): void {
    j.state = State.Queued;
    this.#queue.push(j);
    this.#depth++;
    if (this.#depth > this.#maxDepth) this.#maxDepth = this.#depth;
    if (this.#scheduled === null && !this.#microScheduled) this.#schedule();
  }

  #wait(j: Job): void {
    j.state = State.Waiting;
    this.#waiters.push(j);
    this.#waiting++;
    if (Number.isFinite(j.deadline)) {
      j.timer = setTimeout(
        () => {
          if (j.state !== State.Waiting) return;
          this.#waiting--;
          this.#rejected++;
          this.#settleError(j, this.#queueFull());
        },
        Math.max(0, j.deadline - Date.now()),
      );
    }
  }

  /** Moves waiting submitters into freed queue slots, oldest first. */
  #admitWaiters(): void {
    while (this.#waiting > 0 && this.#depth < this.options.queueSize) {
      const j = this.#waiters.shift();
      if (j === undefined) break;
      if (j.state !== State.Waiting) continue;
      this.#waiting--;
      if (j.timer !== null) {
        clearTimeout(j.timer);
        j.timer = null;
      }
      this.#accepted++;
      this.#enqueue(j);
    }
  }

  #abort(j: Job): void {
    const reason = j.signal?.reason;
    if (j.state === State.Queued) {
      this.#depth--;
      this.#aborted++;
      this.#settleError(
        j,
        new WriteCoordinatorError(
          'WRITECOORDINATOR_ABORTED',
          'the job was aborted while queued; it did not run',
          {
            details: { applied: false },
            cause: reason,
          },
        ),
      );
      this.#checkDrained();
    } else if (j.state === State.Waiting) {
      this.#waiting--;
      this.#rejected++;
      this.#settleError(j, this.#queueFull(reason));
    }
    // Running or done: a job that has started is not interrupted; its caller gets its outcome.
  }

  #expire(j: Job): void {
    this.#expired++;
    this.#settleError(
      j,
      new WriteCoordinatorError('WRITECOORDINATOR_EXPIRED', 'the job reached its deadline before it ran', {
        retryable: true,
        details: { deadline: j.deadline, applied: false },
      }),
    );
  }

  #detach(j: Job): void {
    j.state = State.Done;
    if (j.onAbort !== null) {
      j.signal?.removeEventListener('abort', j.onAbort);
      j.onAbort = null;
    }
    if (j.timer !== null) {
      clearTimeout(j.timer);
      j.timer = null;
    }
  }

  #settleError(j: Job, e: unknown): void {
    this.#detach(j);
    j.reject(e);
  }

  #schedule(now = false): void {
    if (this.#scheduled !== null || this.#microScheduled) return;
    const delay = this.options.maxBatchDelayMs;
    if (now || delay === 0 || this.#closing || this.#depth >= this.options.maxBatchSize) {
      if (this.#delayed !== null) {
        clearTimeout(this.#delayed);
        this.#delayed = null;
      }
      // Within the budget of a turn that just ran batches, the next batch (callers resubmitting in
      // their continuations) runs in a microtask queued behind those continuations, instead of
      // leaving the writer idle for a whole event-loop turn. Past the budget: the next turn.
      if (!now && this.#turnEnd !== 0 && performance.now() < this.#turnEnd) {
        this.#microScheduled = true;
        // A reaction on a settled promise: queued like queueMicrotask, without its per-call AsyncResource.
        void SETTLED.then(this.#microTick);
        return;
      }
      this.#scheduled = setImmediate(this.#tick);
    } else if (this.#delayed === null) {
      // Wait up to maxBatchDelayMs for more jobs; a full batch or close() runs it at once.
      this.#delayed = setTimeout(() => {
        this.#delayed = null;
        this.#schedule(true);
      }, delay);
    }
  }

  /**
   * One turn of the writer loop: batches back to back while jobs are queued, for up to
   * TICK_BUDGET_MS, then yield to the event loop (I/O and timers get their turn; callers'
   * continuations run as soon as the turn ends).
   */
  readonly #tick = (): void => {
    this.#scheduled = null;
    this.#turnEnd = performance.now() + TICK_BUDGET_MS;
    this.#run();
  };

  /** A run queued as a microtask by #schedule, in the budget of the current turn. */
  readonly #microTick = (): void => {
    if (!this.#microScheduled) return; // cancelled by #checkDrained
    this.#microScheduled = false;
    this.#run();
  };

  #run(): void {
    do {
      const batch = this.#takeBatch();
      if (batch.length === 0) break;
      try {
        this.#runBatch(batch);
      } catch (e) {
        // The transaction machinery itself failed (a savepoint statement, or reading the sequence
        // on a broken connection). Whatever was open is rolled back; jobs not settled yet fail.
        this.#endTransaction();
        this.#log.error({ err: e }, 'writecoordinator: batch failed unexpectedly; nothing was applied');
        for (const j of batch) if (j.state === State.Running) this.#failJob(j, e);
      }
    } while (this.#depth > 0 && performance.now() < this.#turnEnd);
    if (this.#depth > 0) {
      // The turn's budget is spent and jobs are left: the next batch runs on the next turn.
      this.#turnEnd = 0;
      this.#schedule(true);
    } else this.#checkDrained();
  }

  /** Takes up to maxBatchSize live jobs in FIFO order; an exclusive job is always a batch of its own. */
  #takeBatch(): Job[] {
    const batch: Job[] = [];
    const max = this.options.maxBatchSize;
    let now = 0;
    while (batch.length < max) {
      const j = this.#queue.peek();
      if (j === undefined) break;
      if (j.state !== State.Queued) {
        this.#queue.shift();
        continue;
      }
      if (j.exclusive && batch.length > 0) break;
      this.#queue.shift();
      this.#depth--;
      if (j.deadline !== Number.POSITIVE_INFINITY) {
        if (now === 0) now = Date.now();
        if (j.deadline <= now) {
          this.#expire(j);
          continue;
        }
      }
      j.state = State.Running;
      batch.push(j);
      if (j.exclusive) break;
    }
    this.#admitWaiters();
    return batch;
  }

  /**
   * Runs one job inside the open transaction. A job with a requestId that is already recorded is
   * not run: its recorded result is replayed. Throws whatever the job throws.
   */
  #runJob(j: Job, seq: number, now: number): void {
    const requestId = j.requestId;
    if (requestId !== null) {
      const row = this.#st.findRequest.get(requestId) as StoredRequest | undefined;
      if (row !== undefined) {
        j.value = row.result_json === null ? undefined : JSON.parse(row.result_json);
        j.seq = Number(row.seq);
        j.replayed = true;
        return;
      }
    }
    // Re-checked at run time: a job batched behind slow jobs may reach its turn after its deadline.
    // It is then rejected without running; the rest of the batch is not affected.
    if (j.deadline !== Number.POSITIVE_INFINITY && Date.now() >= j.deadline) {
      this.#expire(j);
      return;
    }
    const value = j.fn(this.#db);
    if (isThenable(value)) {
      // The job's synchronous part has run; the batch logic rolls it back like any failing job.
      (value as Promise<unknown>).then(undefined, () => {});
      throw new WriteCoordinatorError(
        'WRITECOORDINATOR_ASYNC_JOB',
        'a write job returned a Promise; jobs must be synchronous functions of the database',
        { details: { method: j.method, applied: false } },
      );
    }
    if (requestId !== null) {
      let json: string | undefined;
      try {
        json = JSON.stringify(value);
      } catch (e) {
        throw new WriteCoordinatorError(
          'WRITECOORDINATOR_RESULT_NOT_SERIALISABLE',
          'the result of a job with a requestId must be JSON-serialisable',
          { details: { method: j.method, applied: false }, cause: e },
        );
      }
      this.#st.recordRequest.run(requestId, json ?? null, seq, now);
      this.#recordedSincePrune++;
    }
    j.value = value;
    j.seq = seq;
    j.replayed = false;
  }

  /**
   * Group commit. The batch first runs optimistically: one BEGIN IMMEDIATE, one sentinel SAVEPOINT
   * (the coordinator's savepoint, named like the per-job one), the sequence bump, every job, one
   * COMMIT; no savepoint per job. If a job throws, the whole transaction is rolled back, that job is
   * rejected with its error (it is not run again), and the remaining jobs run again from the start
   * of a fresh transaction with a SAVEPOINT around each, so any further failure is rolled back
   * alone. A job may therefore be *invoked* twice, but only the effects of its last invocation can
   * ever be committed, and the value its caller gets is the value of that invocation.
   *
   * A job must not control the transaction. One that does (COMMIT, ROLLBACK, END, BEGIN after
   * either, RELEASE or ROLLBACK TO of the coordinator's savepoint) is detected (after the job when it
   * leaves no transaction open, else by the sentinel at the end of the optimistic run, or by the
   * per-job savepoint and marker in the isolated run) and is the only job rejected: what a job's
   * COMMIT made durable is reported as committed (request records tell which jobs were), everything
   * else runs again, isolated. The sequence is always bumped from its stored value, so no sequence
   * number is ever reused.
   */
  #runBatch(batch: Job[]): void {
    const db = this.#db;
    const st = this.#st;
    // Read only for the tracing channel: no clock read per batch when nobody listens.
    const t0 = batchChannel.hasSubscribers ? performance.now() : 0;
    if (this.#checkpointer === undefined) {
      this.#checkpointer = BackgroundCheckpointer.start(db, this.options.checkpoint, this.#log);
    }
    let full = false;
    for (let i = 0; i < batch.length; i++) if (batch[i]!.full) full = true;
    const switchSync = full && this.#baseSync !== 2;
    let pending = batch;
    let isolate = false;
    try {
      if (switchSync) db.pragma('synchronous = FULL');
      while (pending.length > 0) {
        const now = Date.now();
        let seq: number;
        try {
          st.begin.run();
          if (!isolate) st.savepoint.run(); // the sentinel, opened before the sequence bump
          seq = this.#nextSeq();
        } catch (e) {
          this.#endTransaction();
          if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_FENCED') this.#fence(e, pending);
          else this.#failAll(pending, e);
          return;
        }
        const outcome = isolate
          ? this.#runIsolated(pending, seq, now)
          : this.#runOptimistic(pending, seq, now);
        if (outcome.kind === 'ok') {
          // All jobs are done or isolated; commit if anything was written.
          let wrote = false;
          let settled = false;
          for (let i = 0; i < pending.length; i++) {
            const j = pending[i]!;
            if (j.state !== State.Running) settled = true;
            else if (!j.replayed) wrote = true;
          }
          const committed = settled ? pending.filter((j) => j.state === State.Running) : pending;
          try {
            if (wrote) st.commit.run();
            else st.rollback.run();
          } catch (e) {
            this.#endTransaction();
            this.#failAll(committed, e);
            return;
          }
          this.#finishBatch(committed, wrote ? seq : 0, t0, full);
          return;
        }
        if (!isolate) this.#isolated++;
        // The job that ended the transaction is known exactly when nothing was left open after it.
        const r = this.#recover(pending, seq, outcome, outcome.kind === 'ended');
        if (r.seqCommitted) this.#finishBatch(r.committed, seq, t0, full);
        pending = r.rerun;
        isolate = true;
      }
    } finally {
      if (switchSync) {
        try {
          db.pragma(`synchronous = ${this.#baseSync}`);
        } catch (e) {
          this.#log.error({ err: e }, 'writecoordinator: could not restore the synchronous pragma');
        }
      }
    }
  }

  /** The stored sequence plus one, inside the open transaction; throws FENCED when fenced off. */
  #nextSeq(): number {
    const row = this.#st.nextSeq.get(this.#fenceBound) as { value: number | bigint } | undefined;
    if (row === undefined) {
      const fence = this.#st.readFence.get() as { value: number | bigint } | undefined;
      throw fencedError(this.#fenceBound, fence === undefined ? null : Number(fence.value));
    }
    return Number(row.value);
  }

  /** A writer of a newer epoch claimed the file: fail this batch and everything queued, refuse the rest. */
  #fence(e: WriteCoordinatorError, pending: Job[]): void {
    this.#fenced = e;
    this.#log.error({ err: e }, 'writecoordinator: fenced off by a newer writer; refusing all work');
    for (const j of pending) this.#failJob(j, e);
    for (const j of this.#waiters.drain()) {
      if (j.state !== State.Waiting) continue;
      this.#waiting--;
      this.#rejected++;
      this.#settleError(j, e);
    }
    for (const j of this.#queue.drain()) {
      if (j.state !== State.Queued) continue;
      this.#depth--;
      this.#failJob(j, e);
    }
    this.#checkDrained();
  }

  #runOptimistic(jobs: Job[], seq: number, now: number): Outcome {
    const db = this.#db;
    for (let i = 0; i < jobs.length; i++) {
      try {
        this.#runJob(jobs[i]!, seq, now);
      } catch (e) {
        if (!db.inTransaction) return { kind: 'ended', index: i, error: e };
        return { kind: 'failed', index: i, error: e };
      }
      if (!db.inTransaction) return { kind: 'ended', index: i, error: undefined };
    }
    // The sentinel: the transaction must still be ours (our sequence, our savepoint).
    if (readSeq(this.#st) !== seq) return TAMPERED;
    try {
      this.#st.releaseSavepoint.run();
    } catch {
      return TAMPERED;
    }
    return OK;
  }

  #runIsolated(jobs: Job[], seq: number, now: number): Outcome {
    const db = this.#db;
    const st = this.#st;
    for (let i = 0; i < jobs.length; i++) {
      const j = jobs[i]!;
      const mark = ++this.#mark;
      st.savepoint.run();
      st.writeMark.run(mark);
      let threw = false;
      let error: unknown;
      try {
        this.#runJob(j, seq, now);
      } catch (e) {
        threw = true;
        error = e;
      }
      if (!db.inTransaction) return { kind: 'ended', index: i, error };
      // A job that rolled back to the savepoint undid the marker written inside it.
      const intact = readMark(st) === mark;
      try {
        if (threw || !intact) st.rollbackToSavepoint.run();
        st.releaseSavepoint.run();
      } catch {
        // The savepoint is gone: the job released it, or ended the transaction and began another.
        return { kind: 'ended', index: i, error };
      }
      if (threw) this.#failJob(j, error);
      else if (!intact) {
        this.#failJob(
          j,
          new WriteCoordinatorError(
            'WRITECOORDINATOR_JOB_FAILED',
            "the job rolled back to the coordinator's savepoint",
            { details: { method: j.method, transactionEnded: false, applied: false } },
          ),
        );
      }
    }
    return OK;
  }

  /**
   * After a failed job or one that ended (or tampered with) the transaction: rolls back what is
   * open, then sorts the batch. If the stored sequence is still below `seq`, nothing was committed:
   * the job at fault is rejected (not applied) and every other live job runs again, isolated. Else a
   * job's COMMIT made a prefix of the batch durable. When the job that did it is known (it left no
   * transaction open, or an isolated run checked it on its own), those before it are committed
   * (unless their request record says otherwise), it is rejected as applied, those after run again. After an optimistic run, request records tell: a job whose record is
   * stored at `seq` was committed, as was every job before it; the first job without one was not
   * (nor anything after it). The job that committed is the one job between those two bounds; when
   * anonymous jobs (no requestId) leave more than one candidate, each candidate is rejected with
   * `applied: 'unknown'`. No committed job is ever run again or reported as not applied.
   */
  #recover(
    jobs: Job[],
    seq: number,
    outcome: Exclude<Outcome, { kind: 'ok' }>,
    exact: boolean,
  ): { committed: Job[]; rerun: Job[]; seqCommitted: boolean } {
    this.#endTransaction();
    const seqCommitted = readSeq(this.#st) >= seq;
    const at = outcome.kind === 'tampered' ? -1 : outcome.index;
    const atError = outcome.kind === 'tampered' ? undefined : outcome.error;
    const committed: Job[] = [];
    const rerun: Job[] = [];
    const live = (i: number): boolean => jobs[i]!.state === State.Running;
    if (!seqCommitted || exact) {
      for (let i = 0; i < jobs.length; i++) {
        if (!live(i)) continue;
        const j = jobs[i]!;
        if (i === at) {
          this.#failJob(j, outcome.kind === 'failed' ? atError : this.#endedError(j, seqCommitted, atError));
        } else if (seqCommitted && i < at && this.#recorded(j, seq)) committed.push(j);
        else rerun.push(j);
      }
      return { committed, rerun, seqCommitted };
    }
    // Optimistic run, partly committed by some job: find the bounds from the request records.
    const ran = at >= 0 ? at : jobs.length;
    let lastKnown = -1;
    let firstNot = ran;
    for (let i = 0; i < ran && firstNot === ran; i++) {
      if (!live(i)) continue;
      const j = jobs[i]!;
      if (j.replayed) continue; // wrote nothing: committed whatever happened
      if (j.requestId === null) continue;
      const row = this.#st.findRequest.get(j.requestId) as StoredRequest | undefined;
      if (row !== undefined && Number(row.seq) === seq) lastKnown = i;
      else firstNot = i;
    }
    const suspects: number[] = [];
    for (let i = lastKnown + 1; i < firstNot; i++) {
      if (live(i) && !jobs[i]!.replayed) suspects.push(i);
    }
    if (firstNot < ran) suspects.push(firstNot);
    else if (at >= 0) suspects.push(at);
    for (let i = 0; i < jobs.length; i++) {
      if (!live(i)) continue;
      const j = jobs[i]!;
      if (suspects.includes(i)) {
        if (suspects.length === 1) {
          // the job that committed: its work up to its COMMIT is durable
          this.#failJob(
            j,
            i === at && outcome.kind === 'failed'
              ? toJobError(atError, { method: j.method, transactionEnded: 'committed', applied: true })
              : this.#endedError(j, true, i === at ? atError : undefined),
          );
        } else {
          this.#failJob(
            j,
            new WriteCoordinatorError(
              'WRITECOORDINATOR_JOB_FAILED',
              'a job of the batch committed the transaction itself; whether this job was committed is unknown',
              { details: { method: j.method, applied: 'unknown' } },
            ),
          );
        }
      } else if (i === at) {
        // failed or ended after the commit, in the transaction the offender began: rolled back
        this.#failJob(j, outcome.kind === 'failed' ? atError : this.#endedError(j, false, atError));
      } else if (i < (suspects[0] ?? firstNot) || j.replayed) committed.push(j);
      else rerun.push(j);
    }
    return { committed, rerun, seqCommitted };
  }

  /** Whether a job that ran before a job's COMMIT was committed by it: its record says so, if it has one. */
  #recorded(j: Job, seq: number): boolean {
    if (j.replayed || j.requestId === null) return true;
    const row = this.#st.findRequest.get(j.requestId) as StoredRequest | undefined;
    return row !== undefined && Number(row.seq) === seq;
  }

  #endedError(j: Job, committed: boolean, error: unknown): WriteCoordinatorError {
    const details = {
      method: j.method,
      transactionEnded: committed ? 'committed' : 'rolled back',
      applied: committed,
    };
    // e.g. SQLITE_FULL, which rolls the transaction back
    if (sqliteCodeOf(error) !== undefined) return toJobError(error, details);
    return new WriteCoordinatorError(
      'WRITECOORDINATOR_JOB_FAILED',
      committed
        ? 'the job committed the batch transaction'
        : 'the job ended the batch transaction or released its savepoint',
      { details, cause: error },
    );
  }

  /** Rolls back whatever is open; a failure here is logged (the connection is then beyond repair). */
  #endTransaction(): void {
    if (!this.#db.inTransaction) return;
    try {
      this.#st.rollback.run();
    } catch (e) {
      this.#log.error({ err: e }, 'writecoordinator: rollback failed');
    }
  }

  #failJob(j: Job, e: unknown): void {
    if (j.state === State.Done) return;
    this.#failed++;
    if (j.t0 >= 0) this.#latency.record(performance.now() - j.t0);
    this.#settleError(j, toJobError(e, { method: j.method, applied: false }));
  }

  /** The batch transaction itself failed (BEGIN or COMMIT): nothing was applied. */
  #failAll(jobs: Job[], e: unknown): void {
    this.#log.warn({ err: e, jobs: jobs.length }, 'writecoordinator: batch failed; nothing was applied');
    for (const j of jobs) this.#failJob(j, e);
  }

  #finishBatch(committed: Job[], seq: number, t0: number, full: boolean): void {
    const now = performance.now();
    if (seq > 0) {
      this.#seq = seq;
      this.#batches++;
      this.#batchedJobs += committed.length;
    }
    const listening = this.#listeners.size > 0 || this.#streams.size > 0;
    const events: CommitEvent['jobs'] | null = listening && seq > 0 ? [] : null;
    for (let i = 0; i < committed.length; i++) {
      const j = committed[i]!;
      if (j.state !== State.Running) continue;
      this.#completed++;
      if (j.replayed) this.#replayed++;
      else if (events !== null) events.push({ method: j.method, requestId: j.requestId });
      if (j.t0 >= 0) this.#latency.record(now - j.t0);
      if (j.signal !== null || j.timer !== null) this.#detach(j);
      else j.state = State.Done;
      j.resolve({ value: j.value, seq: j.seq, replayed: j.replayed });
    }
    if (events !== null) this.#emit({ seq, jobs: events });
    if (batchChannel.hasSubscribers) {
      batchChannel.publish({
        seq,
        size: committed.length,
        durationMs: t0 === 0 ? 0 : now - t0, // 0: the channel got its subscriber mid-batch
        durability: full ? 'full' : 'normal',
      });
    }
    if (seq > 0) this.#maybePrune();
  }

  #emit(e: CommitEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (err) {
        this.#log.error({ err, seq: e.seq }, 'writecoordinator: a change listener threw');
      }
    }
    for (const s of this.#streams) s.push(e);
  }

  #maybePrune(): void {
    if (this.#recordedSincePrune === 0) return;
    const now = Date.now();
    const idem = this.options.idempotency;
    if (
      now - this.#lastPrune < idem.pruneIntervalMs &&
      this.#recordedSincePrune < Math.ceil(idem.maxEntries / 4)
    ) {
      return;
    }
    this.#prune(now);
  }

  /** Drops recorded requests older than maxAgeMs and beyond the newest maxEntries, in one transaction. */
  #prune(now: number): void {
    const idem = this.options.idempotency;
    this.#lastPrune = now;
    this.#recordedSincePrune = 0;
    try {
      this.#st.begin.run();
      const byAge = this.#st.pruneByAge.run(now - idem.maxAgeMs).changes;
      const byCount = this.#st.pruneByCount.run(idem.maxEntries).changes;
      this.#st.commit.run();
      if (byAge + byCount > 0)
        this.#log.debug({ byAge, byCount }, 'writecoordinator: pruned request records');
    } catch (e) {
      this.#endTransaction();
      this.#log.warn({ err: e }, 'writecoordinator: pruning request records failed');
    }
  }

  subscribe(listener: (e: CommitEvent) => void): () => void {
    if (typeof listener !== 'function') {
      throw new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'listener must be a function');
    }
    if (this.#closed !== null) return () => {};
    // Wrapped so that subscribing the same function twice gives two independent subscriptions.
    const l = (e: CommitEvent): void => listener(e);
    this.#listeners.add(l);
    return () => {
      this.#listeners.delete(l);
    };
  }

  changes(opts?: { signal?: AbortSignal }): AsyncIterable<CommitEvent> {
    const stream = new ChangeStream(
      this.options.changesBufferSize,
      (s) => this.#streams.delete(s),
      opts?.signal,
    );
    if (this.#closed !== null) stream.end();
    else if (!opts?.signal?.aborted) this.#streams.add(stream);
    return stream;
  }

  metrics(): WriteCoordinatorMetrics {
    const [p50, p99] = this.#latency.percentiles(50, 99);
    return {
      accepted: this.#accepted,
      completed: this.#completed,
      replayed: this.#replayed,
      failed: this.#failed,
      expired: this.#expired,
      aborted: this.#aborted,
      rejected: this.#rejected,
      dropped: this.#dropped,
      queueDepth: this.#depth,
      maxQueueDepth: this.#maxDepth,
      waiting: this.#waiting,
      batches: this.#batches,
      meanBatchSize: this.#batches === 0 ? 0 : this.#batchedJobs / this.#batches,
      isolatedBatches: this.#isolated,
      p50LatencyMs: p50 ?? 0,
      p99LatencyMs: p99 ?? 0,
      seq: this.#seq,
    };
  }

  /**
   * Stop intake (new submits: CLOSED) → reject submitters still waiting for queue space
   * (SHUTTING_DOWN) → drain the queue until drainTimeoutMs → reject what is left (SHUTTING_DOWN,
   * never applied) → end change streams and drop listeners → resolve. The database stays open:
   * the caller owns it and closes it afterwards.
   */
  close(opts?: { drainTimeoutMs?: number }): Promise<void> {
    if (this.#closed !== null) return this.#closed;
    const drainTimeoutMs = opts?.drainTimeoutMs ?? this.options.drainTimeoutMs;
    this.#closing = true;
    this.#closed = new Promise<void>((resolve) => {
      this.#finishClose = resolve;
    });
    for (const j of this.#waiters.drain()) {
      if (j.state !== State.Waiting) continue;
      this.#waiting--;
      this.#rejected++;
      this.#settleError(j, this.#shuttingDown());
    }
    if (this.#depth > 0) {
      if (drainTimeoutMs <= 0) this.#dropQueued();
      else {
        this.#drainTimer = setTimeout(() => this.#dropQueued(), drainTimeoutMs);
        this.#schedule();
      }
    }
    this.#checkDrained();
    return this.#closed;
  }

  #shuttingDown(): WriteCoordinatorError {
    return new WriteCoordinatorError(
      'WRITECOORDINATOR_SHUTTING_DOWN',
      'the write coordinator is shutting down; the job was not applied',
      { retryable: true, details: { applied: false } },
    );
  }

  #dropQueued(): void {
    for (const j of this.#queue.drain()) {
      if (j.state !== State.Queued) continue;
      this.#depth--;
      this.#dropped++;
      this.#settleError(j, this.#shuttingDown());
    }
    this.#checkDrained();
  }

  #checkDrained(): void {
    if (!this.#closing || this.#depth > 0 || this.#finishClose === null) return;
    if (this.#drainTimer !== null) clearTimeout(this.#drainTimer);
    if (this.#scheduled !== null) {
      clearImmediate(this.#scheduled);
      this.#scheduled = null;
    }
    this.#microScheduled = false;
    if (this.#delayed !== null) {
      clearTimeout(this.#delayed);
      this.#delayed = null;
    }
    const finish = this.#finishClose;
    this.#finishClose = null;
    for (const s of [...this.#streams]) s.end();
    this.#streams.clear();
    this.#listeners.clear();
    const checkpointer = this.#checkpointer;
    this.#checkpointer = null;
    const done = (): void => {
      if (closeChannel.hasSubscribers) closeChannel.publish({ seq: this.#seq, metrics: this.metrics() });
      this.#log.info({ seq: this.#seq }, 'writecoordinator: closed');
      finish();
    };
    // Its connection is closed before close() resolves, so the caller's db.close() is the last one.
    if (checkpointer === null || checkpointer === undefined) done();
    else void checkpointer.stop().then(done);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** How a run of the batch's jobs went (see #runBatch). */
type Outcome =
  | { kind: 'ok' }
  | { kind: 'failed'; index: number; error: unknown }
  | { kind: 'ended'; index: number; error: unknown }
  | { kind: 'tampered' };
