import diagnostics from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import type { z } from 'zod';
import { BATCH_CHANNEL, CLOSE_CHANNEL } from '../channels.js';
import { toJobError, WriteCoordinatorError } from '../errors.js';
import type { Logger, ResolvedWriteCoordinatorOptions } from '../options.js';
import type { SqliteDatabase } from '../sqlite.js';
import type {
  CommitEvent,
  JobFn,
  NamedJob,
  SubmitOptions,
  WriteCoordinator,
  WriteCoordinatorMetrics,
  WriteResult,
} from '../types.js';
import { BatchRunner } from './batch-runner.js';
import { CommitEvents } from './commit-events.js';
import { Counters } from './counters.js';
import { Deque } from './deque.js';
import {
  abortedError,
  checkSubmitOptions,
  closedError,
  expiredError,
  jobFunctionOf,
  queueFullError,
  shuttingDownError,
} from './intake.js';
import { detach, Job, promiseOf, JobState as State, settleError } from './job.js';
import { MethodRegistry } from './method-registry.js';

const batchChannel = diagnostics.channel(BATCH_CHANNEL);
const closeChannel = diagnostics.channel(CLOSE_CHANNEL);

/** How long one turn of the writer loop may keep committing batches before it yields. */
const TICK_BUDGET_MS = 2;

const EMPTY_OPTS: SubmitOptions = Object.freeze({});
const SETTLED = Promise.resolve();

/**
 * The coordinator: intake (validation, the bounded queue and its waiting room, aborts and
 * deadlines), the writer loop that takes batches off the queue and hands them to the `BatchRunner`,
 * the jobs' settlement with its metrics and commit events, and the close sequence.
 */
export class Coordinator implements WriteCoordinator {
  readonly options: Readonly<ResolvedWriteCoordinatorOptions>;
  readonly #log: Logger;
  readonly #registry = new MethodRegistry();
  readonly #runner: BatchRunner;
  readonly #events: CommitEvents;
  readonly #queue = new Deque<Job>();
  readonly #waiters = new Deque<Job>();
  readonly #counts: Counters;
  #seq: number;
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
  #sampled = 0;
  constructor(options: Readonly<ResolvedWriteCoordinatorOptions>) {
    this.options = options;
    this.#log = options.logger;
    this.#counts = new Counters(options.latencyReservoirSize);
    this.#events = new CommitEvents(options.changesBufferSize, options.logger);
    // Checks and prepares the database (a read-only or non-WAL one fails here, at creation).
    this.#runner = new BatchRunner(options, {
      expire: (j) => this.#expire(j),
      failJob: (j, e) => this.#failJob(j, e),
      fence: (e, pending) => this.#fence(e, pending),
      finishBatch: (committed, seq, t0, full) => this.#finishBatch(committed, seq, t0, full),
    });
    this.#seq = this.#runner.storedSeq();
    this.#runner.prune(Date.now());
  }

  get seq(): number {
    return this.#seq;
  }

  register<P>(
    method: string,
    paramsSchema: z.ZodType<P>,
    handler: (db: SqliteDatabase, params: P) => unknown,
  ): void {
    this.#registry.register(method, paramsSchema, handler);
  }

  submit<T>(job: JobFn<T> | NamedJob, opts?: SubmitOptions): Promise<WriteResult<T>> {
    return this.#submit(job, opts ?? EMPTY_OPTS, false) as Promise<WriteResult<T>>;
  }

  runExclusive<T>(fn: JobFn<T>, opts?: SubmitOptions): Promise<WriteResult<T>> {
    return this.#submit(fn, opts ?? EMPTY_OPTS, true) as Promise<WriteResult<T>>;
  }

  #refuse(error: WriteCoordinatorError): Promise<never> {
    this.#counts.rejected++;
    return Promise.reject(error);
  }

  #submit(
    job: JobFn<unknown> | NamedJob,
    opts: SubmitOptions,
    exclusive: boolean,
  ): Promise<WriteResult<unknown>> {
    if (this.#fenced !== null) return this.#refuse(this.#fenced);
    if (this.#closing) {
      return this.#refuse(closedError());
    }
    const fn = jobFunctionOf(job, exclusive, this.#registry);
    if (fn instanceof WriteCoordinatorError) return this.#refuse(fn);
    const method = typeof job === 'function' ? null : (job as NamedJob).method;
    const { signal, deadline, requestId, durability } = opts;
    if (opts !== EMPTY_OPTS) {
      const invalid = checkSubmitOptions(opts);
      if (invalid !== null) return this.#refuse(invalid);
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
    const promise = promiseOf(j);
    if (deadline !== undefined && deadline <= Date.now()) {
      this.#counts.accepted++;
      this.#expire(j);
      return promise;
    }
    if (this.#depth < this.options.queueSize && this.#waiting === 0) {
      this.#counts.accepted++;
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

  #queueFull(cause?: unknown): WriteCoordinatorError {
    return queueFullError(this.options.queueSize, this.#waiting, cause);
  }

  #enqueue(j: Job): void {
    j.state = State.Queued;
    this.#queue.push(j);
    this.#depth++;
    if (this.#depth > this.#counts.maxDepth) this.#counts.maxDepth = this.#depth;
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
          this.#counts.rejected++;
          settleError(j, this.#queueFull());
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
      this.#counts.accepted++;
      this.#enqueue(j);
    }
  }

  #abort(j: Job): void {
    const reason = j.signal?.reason;
    if (j.state === State.Queued) {
      this.#depth--;
      this.#counts.aborted++;
      settleError(j, abortedError(reason));
      this.#checkDrained();
    } else if (j.state === State.Waiting) {
      this.#waiting--;
      this.#counts.rejected++;
      settleError(j, this.#queueFull(reason));
    }
    // Running or done: a job that has started is not interrupted; its caller gets its outcome.
  }

  #expire(j: Job): void {
    this.#counts.expired++;
    settleError(j, expiredError(j.deadline));
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
        this.#runner.runBatch(batch);
      } catch (e) {
        // The transaction machinery itself failed (a savepoint statement, or reading the sequence
        // on a broken connection). Whatever was open is rolled back; jobs not settled yet fail.
        this.#runner.endTransaction();
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

  /** A writer of a newer epoch claimed the file: fail this batch and everything queued, refuse the rest. */
  #fence(e: WriteCoordinatorError, pending: Job[]): void {
    this.#fenced = e;
    this.#log.error({ err: e }, 'writecoordinator: fenced off by a newer writer; refusing all work');
    for (const j of pending) this.#failJob(j, e);
    for (const j of this.#waiters.drain()) {
      if (j.state !== State.Waiting) continue;
      this.#waiting--;
      this.#counts.rejected++;
      settleError(j, e);
    }
    for (const j of this.#queue.drain()) {
      if (j.state !== State.Queued) continue;
      this.#depth--;
      this.#failJob(j, e);
    }
    this.#checkDrained();
  }

  #failJob(j: Job, e: unknown): void {
    if (j.state === State.Done) return;
    this.#counts.failed++;
    if (j.t0 >= 0) this.#counts.latency.record(performance.now() - j.t0);
    settleError(j, toJobError(e, { method: j.method, applied: false }));
  }

  #finishBatch(committed: Job[], seq: number, t0: number, full: boolean): void {
    const now = performance.now();
    if (seq > 0) {
      this.#seq = seq;
      this.#counts.batches++;
      this.#counts.batchedJobs += committed.length;
    }
    const listening = this.#events.listening;
    const events: CommitEvent['jobs'] | null = listening && seq > 0 ? [] : null;
    for (let i = 0; i < committed.length; i++) {
      const j = committed[i]!;
      if (j.state !== State.Running) continue;
      this.#counts.completed++;
      if (j.replayed) this.#counts.replayed++;
      else if (events !== null) events.push({ method: j.method, requestId: j.requestId });
      if (j.t0 >= 0) this.#counts.latency.record(now - j.t0);
      if (j.signal !== null || j.timer !== null) detach(j);
      else j.state = State.Done;
      j.resolve({ value: j.value, seq: j.seq, replayed: j.replayed });
    }
    if (events !== null) this.#events.emit({ seq, jobs: events });
    if (batchChannel.hasSubscribers) {
      batchChannel.publish({
        seq,
        size: committed.length,
        durationMs: t0 === 0 ? 0 : now - t0, // 0: the channel got its subscriber mid-batch
        durability: full ? 'full' : 'normal',
      });
    }
  }

  subscribe(listener: (e: CommitEvent) => void): () => void {
    return this.#events.subscribe(listener, this.#closed !== null);
  }

  changes(opts?: { signal?: AbortSignal }): AsyncIterable<CommitEvent> {
    return this.#events.changes(opts?.signal, this.#closed !== null);
  }

  metrics(): WriteCoordinatorMetrics {
    return this.#counts.snapshot({
      depth: this.#depth,
      waiting: this.#waiting,
      isolated: this.#runner.isolated,
      seq: this.#seq,
    });
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
      this.#counts.rejected++;
      settleError(j, shuttingDownError());
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

  #dropQueued(): void {
    for (const j of this.#queue.drain()) {
      if (j.state !== State.Queued) continue;
      this.#depth--;
      this.#counts.dropped++;
      settleError(j, shuttingDownError());
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
    this.#events.end();
    const checkpointer = this.#runner.takeCheckpointer();
    const done = (): void => {
      if (closeChannel.hasSubscribers) closeChannel.publish({ seq: this.#seq, metrics: this.metrics() });
      this.#log.info({ seq: this.#seq }, 'writecoordinator: closed');
      finish();
    };
    // Its connection is closed before close() resolves, so the caller's db.close() is the last one.
    if (checkpointer === null) done();
    else void checkpointer.stop().then(done);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
