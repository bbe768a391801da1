import diagnostics from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import { BATCH_CHANNEL } from '../channels.js';
import { isWriteCoordinatorError, WriteCoordinatorError } from '../errors.js';
import type { Logger, ResolvedWriteCoordinatorOptions } from '../options.js';
import type { SqliteDatabase } from '../sqlite.js';
import { OK, type Outcome, recover, TAMPERED } from './batch-recovery.js';
import { BackgroundCheckpointer } from './checkpointer.js';
import { isThenable, type Job, JobState } from './job.js';
import {
  claimFence,
  configureDatabase,
  fencedError,
  prepareStore,
  readMark,
  readSeq,
  type Statements,
  synchronousFor,
} from './store.js';

const batchChannel = diagnostics.channel(BATCH_CHANNEL);

/** Thrown by #runJob when the guard row is gone before a job runs (never leaves this file). */
const GUARD_LOST: unique symbol = Symbol('x_wc_guard lost');

/** A row of findRequestGuarded: `seq` null when the request has no record. */
interface GuardedRequest {
  armed: number;
  result_json: string | null;
  seq: number | bigint | null;
}

/** What the runner reports back to the coordinator, which owns the jobs' settlement and the metrics. */
export interface BatchSettlement {
  /** The job reached its deadline before it ran. */
  expire(j: Job): void;
  failJob(j: Job, e: unknown): void;
  /** A writer of a newer epoch claimed the file: fail `pending` and everything queued. */
  fence(e: WriteCoordinatorError, pending: Job[]): void;
  /** `committed` are done at `seq` (0: nothing was written); `t0` is for the batch channel. */
  finishBatch(committed: Job[], seq: number, t0: number, full: boolean): void;
}

/**
 * The writer's side of the database: runs one batch of jobs in one transaction (group commit, with
 * failing jobs isolated), keeps the idempotency records pruned and the background checkpointer going.
 */
export class BatchRunner {
  readonly #db: SqliteDatabase;
  readonly #st: Statements;
  readonly #log: Logger;
  readonly #options: Readonly<ResolvedWriteCoordinatorOptions>;
  readonly #settle: BatchSettlement;
  readonly #baseSync: number;
  /** The last per-job marker written (see #runIsolated). */
  #mark: number;
  /** The fencing epoch bound into every sequence bump (no check without `fencingEpoch`). */
  readonly #fenceBound: number;
  #lastPrune = 0;
  #recordedSincePrune = 0;
  /** Started with the first batch; null when there is none (disabled, not better-sqlite3, closed). */
  #checkpointer: BackgroundCheckpointer | null | undefined = undefined;
  /** Batches that needed the savepoint re-run because a job failed. */
  isolated = 0;

  constructor(options: Readonly<ResolvedWriteCoordinatorOptions>, settle: BatchSettlement) {
    this.#options = options;
    this.#db = options.database;
    this.#log = options.logger;
    this.#settle = settle;
    this.#baseSync = synchronousFor(options.durability);
    // better-sqlite3 is synchronous and the database is already open, so settings and tables are
    // checked here: a read-only or non-WAL database fails at creation, not at the first write.
    configureDatabase(this.#db, options.durability, options.busyTimeoutMs);
    this.#st = prepareStore(this.#db);
    this.#fenceBound = options.fencingEpoch ?? Number.MAX_SAFE_INTEGER;
    if (options.fencingEpoch !== undefined) claimFence(this.#db, this.#st, options.fencingEpoch);
    this.#mark = readMark(this.#st);
  }

  /** The committed sequence stored in the file. */
  storedSeq(): number {
    return readSeq(this.#st);
  }

  /** At close: the checkpointer (if one runs) to stop; none is started afterwards. */
  takeCheckpointer(): BackgroundCheckpointer | null {
    const checkpointer = this.#checkpointer ?? null;
    this.#checkpointer = null;
    return checkpointer;
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
   * A job must not control the transaction, and cannot commit it: the commit guard (a row with a
   * pending deferred foreign-key violation, see GUARD_TABLE) makes SQLite refuse any COMMIT or END
   * until the coordinator's own, so such a job fails with SQLITE_CONSTRAINT_FOREIGNKEY like any
   * failing job. A job that rolls back (ROLLBACK, alone or followed by BEGIN) is seen right after it
   * (no transaction, or no guard row); RELEASE or ROLLBACK TO of the coordinator's savepoint is seen
   * by the sentinel at the end of the optimistic run, or by the per-job savepoint and marker in the
   * isolated run. Each is the only job rejected; nothing of the batch was committed, and every
   * other job runs again, isolated. The sequence is always bumped from its stored value, so no
   * sequence number is ever reused.
   */
  runBatch(batch: Job[]): void {
    const db = this.#db;
    const st = this.#st;
    // Read only for the tracing channel: no clock read per batch when nobody listens.
    const t0 = batchChannel.hasSubscribers ? performance.now() : 0;
    if (this.#checkpointer === undefined) {
      this.#checkpointer = BackgroundCheckpointer.start(db, this.#options.checkpoint, this.#log);
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
          // the guard below depends on foreign keys (an app may have turned them off between batches)
          const fk = st.readForeignKeys.get() as { foreign_keys?: number } | undefined;
          if (fk?.foreign_keys !== 1) db.pragma('foreign_keys = ON');
          st.begin.run();
          st.armGuard.run(); // from here until disarmGuard, no COMMIT can succeed
          if (!isolate) st.savepoint.run(); // the sentinel, opened before the sequence bump
          seq = this.#nextSeq();
        } catch (e) {
          this.endTransaction();
          if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_FENCED')
            this.#settle.fence(e, pending);
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
            if (j.state !== JobState.Running) settled = true;
            else if (!j.replayed) wrote = true;
          }
          const committed = settled ? pending.filter((j) => j.state === JobState.Running) : pending;
          try {
            if (wrote) {
              st.disarmGuard.run();
              st.commit.run();
            } else st.rollback.run();
          } catch (e) {
            this.endTransaction();
            this.#failAll(committed, e);
            return;
          }
          this.#finish(committed, wrote ? seq : 0, t0, full);
          return;
        }
        if (!isolate) this.isolated++;
        this.endTransaction();
        const r = recover(st, pending, seq, outcome, this.#settle.failJob);
        if (r.seqCommitted) this.#finish(r.committed, seq, t0, full);
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

  #finish(committed: Job[], seq: number, t0: number, full: boolean): void {
    this.#settle.finishBatch(committed, seq, t0, full);
    if (seq > 0) this.#maybePrune();
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

  /**
   * Whether the batch transaction is still the one the coordinator began: open, with its guard row.
   * A job's COMMIT cannot succeed while the guard is armed, so a job that ended the transaction
   * rolled it back (alone, or followed by BEGIN): that job is known exactly, and nothing committed.
   */
  #intact(): boolean {
    return this.#db.inTransaction && this.#st.guardArmed.get() !== undefined;
  }

  /**
   * The optimistic run pays no statement per job for its checks: after each job, whether a
   * transaction is open (free); before each job with a requestId, whether the guard row is still
   * there (folded into the lookup it makes anyway); at the end, the guard, the sentinel savepoint
   * and the sequence. A lost guard means some job since the last check rolled back: the run is
   * treated as tampered (rolled back, every job run again isolated, where each is checked alone).
   */
  #runOptimistic(jobs: Job[], seq: number, now: number): Outcome {
    const db = this.#db;
    for (let i = 0; i < jobs.length; i++) {
      try {
        this.#runJob(jobs[i]!, seq, now);
      } catch (e) {
        if (e === GUARD_LOST) return TAMPERED;
        if (!db.inTransaction) return { kind: 'ended', index: i, error: e };
        return { kind: 'failed', index: i, error: e };
      }
      if (!db.inTransaction) return { kind: 'ended', index: i, error: undefined };
    }
    if (this.#st.guardArmed.get() === undefined) return TAMPERED;
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
        if (e === GUARD_LOST) return TAMPERED; // cannot happen: every job is checked below
        threw = true;
        error = e;
      }
      if (!this.#intact()) return { kind: 'ended', index: i, error };
      // A job that rolled back to the savepoint undid the marker written inside it.
      const intact = readMark(st) === mark;
      try {
        if (threw || !intact) st.rollbackToSavepoint.run();
        st.releaseSavepoint.run();
      } catch {
        // The savepoint is gone: the job released it, or ended the transaction and began another.
        return { kind: 'ended', index: i, error };
      }
      if (threw) this.#settle.failJob(j, error);
      else if (!intact) {
        this.#settle.failJob(
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
   * Runs one job inside the open transaction. A job with a requestId that is already recorded is
   * not run: its recorded result is replayed. Throws whatever the job throws.
   */
  #runJob(j: Job, seq: number, now: number): void {
    const requestId = j.requestId;
    if (requestId !== null) {
      const row = this.#st.findRequestGuarded.get(requestId) as GuardedRequest | undefined;
      if (row === undefined) throw GUARD_LOST; // a job before this one rolled the batch back
      if (row.seq !== null) {
        j.value = row.result_json === null ? undefined : JSON.parse(row.result_json);
        j.seq = Number(row.seq);
        j.replayed = true;
        return;
      }
    }
    // Re-checked at run time: a job batched behind slow jobs may reach its turn after its deadline.
    // It is then rejected without running; the rest of the batch is not affected.
    if (j.deadline !== Number.POSITIVE_INFINITY && Date.now() >= j.deadline) {
      this.#settle.expire(j);
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

  /** Rolls back whatever is open; a failure here is logged (the connection is then beyond repair). */
  endTransaction(): void {
    if (!this.#db.inTransaction) return;
    try {
      this.#st.rollback.run();
    } catch (e) {
      this.#log.error({ err: e }, 'writecoordinator: rollback failed');
    }
  }

  /** The batch transaction itself failed (BEGIN or COMMIT): nothing was applied. */
  #failAll(jobs: Job[], e: unknown): void {
    this.#log.warn({ err: e, jobs: jobs.length }, 'writecoordinator: batch failed; nothing was applied');
    for (const j of jobs) this.#settle.failJob(j, e);
  }

  #maybePrune(): void {
    if (this.#recordedSincePrune === 0) return;
    const now = Date.now();
    const idem = this.#options.idempotency;
    if (
      now - this.#lastPrune < idem.pruneIntervalMs &&
      this.#recordedSincePrune < Math.ceil(idem.maxEntries / 4)
    ) {
      return;
    }
    this.prune(now);
  }

  /** Drops recorded requests older than maxAgeMs and beyond the newest maxEntries, in one transaction. */
  prune(now: number): void {
    const idem = this.#options.idempotency;
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
      this.endTransaction();
      this.#log.warn({ err: e }, 'writecoordinator: pruning request records failed');
    }
  }
}
