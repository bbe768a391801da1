import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { ClientError } from '../errors.js';
import type { CoordinatorLike, SqliteDb, SyncWriter } from '../writer-types.js';
import { WorkerConnection } from './apply-worker.js';

/**
 * A long write runs as a generator: each `yield` marks a point where the work may pause. On the
 * apply connection the runner gives the event loop a turn whenever a slice has run this long.
 * Short, because one turn of the loop can run several pieces of work back to back (a slice of
 * staging, a slice of the next page's validation, the JSON.parse of the page after it).
 */
export const SLICE_BUDGET_MS = 8;
/** The apply connection's page cache, KiB (SQLite's own default). */
const APPLY_CACHE_KIB = 2000;
/** The apply connection is closed after this long without use. */
const APPLY_CONNECTION_IDLE_MS = 2_000;
/**
 * Work announced at this many rows or fewer runs as one transaction on the app's connection (a
 * few milliseconds): only larger work takes the apply connection and its slices, so an app write
 * can only meet a held write lock during a large hydrate, recover or push.
 */
export const SMALL_WORK_ROWS = 1_000;
/**
 * Work announced at more rows than this (or at an unknown count) runs on the apply connection
 * that a worker thread owns, so its COMMIT does not block the event loop (see apply-worker.ts);
 * medium work (a staged page, a push of up to this many rows) runs on an apply connection on this
 * thread, without the cost of a call to the worker per statement. Measured COMMIT CPU per row: a
 * replay ~0.7 µs, a freeze ~0.4 µs, a snapshot apply ~0.2 µs, so a COMMIT of this many rows
 * stays under ~40 ms.
 */
export const LONG_WORK_ROWS = 50_000;

/**
 * Sets the busy timeout of the app's connection to 0 and returns what restores it (see
 * `TxRunner.sliced`).
 */
function failFastWhileLocked(db: SqliteDb): () => void {
  const before = Number(db.pragma('busy_timeout', { simple: true }));
  if (!(before > 0)) return () => {};
  db.pragma('busy_timeout = 0');
  return () => {
    if (db.open) db.pragma(`busy_timeout = ${before}`);
  };
}

/** Runs a generator to its end at once (the one-transaction fallback). */
function drain<T>(it: Generator<unknown, T, unknown>): T {
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
    if (isPromiseLike(r.value)) throw new TypeError('a generator that waits needs the apply connection');
  }
}

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

/**
 * Thrown by `TxRunner.sliced` with `waits` where no apply connection can be opened (before the
 * generator starts): the caller takes a path that never waits inside a transaction.
 */
export class NoApplyConnection extends Error {
  constructor() {
    super('no apply connection: this database cannot run a transaction that waits');
    this.name = 'NoApplyConnection';
  }
}

function aborted(signal: AbortSignal, cause: unknown = signal.reason): ClientError {
  return new ClientError('OVERSYNC_CLIENT_ABORTED', 'operation aborted', { cause });
}

export function isCoordinator(w: unknown): w is CoordinatorLike {
  return (
    typeof w === 'object' &&
    w !== null &&
    typeof (w as { runExclusive?: unknown }).runExclusive === 'function' &&
    typeof (w as { submit?: unknown }).submit === 'function'
  );
}

export function isSqliteDb(w: unknown): w is SqliteDb {
  return (
    typeof w === 'object' &&
    w !== null &&
    typeof (w as { prepare?: unknown }).prepare === 'function' &&
    typeof (w as { transaction?: unknown }).transaction === 'function' &&
    typeof (w as { exec?: unknown }).exec === 'function'
  );
}

/**
 * Runs every local transaction of the client: directly (BEGIN IMMEDIATE) on a better-sqlite3
 * database, or as an exclusive job of a write coordinator, so the coordinator stays the only
 * writer of the file. Transactions are synchronous and never span an await.
 */
export class TxRunner {
  readonly #writer: SyncWriter;
  readonly #durability: 'normal' | 'full';
  #inFlight = 0;
  #apply: SqliteDb | undefined;
  #applyWorker: WorkerConnection | undefined;
  #applyIdle: ReturnType<typeof setTimeout> | undefined;
  /** Pending while a sliced apply holds the write lock across a yield (see `appWrite`). */
  #locked: Promise<void> | undefined;

  constructor(writer: SyncWriter, durability: 'normal' | 'full') {
    this.#writer = writer;
    this.#durability = durability;
  }

  /**
   * The raw connection, for pragmas that must run outside a transaction and for ownership. Read
   * lazily: a coordinator's `options.database` may only become available later (e.g. a dbproxy
   * process that is not yet the primary).
   */
  get db(): SqliteDb {
    const w = this.#writer;
    const db = isCoordinator(w) ? w.options.database : w;
    if (!isSqliteDb(db)) throw new TypeError('writer has no usable SQLite database');
    return db;
  }

  /** True while one of the client's own transactions is queued or running. */
  get busy(): boolean {
    return this.#inFlight > 0;
  }

  get viaCoordinator(): boolean {
    return isCoordinator(this.#writer);
  }

  /** One write transaction; resolves after COMMIT. */
  async tx<T>(fn: (db: SqliteDb) => T, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw aborted(signal);
    if (isCoordinator(this.#writer)) {
      const opts: { signal?: AbortSignal; durability: 'normal' | 'full' } = { durability: this.#durability };
      if (signal) opts.signal = signal;
      this.#inFlight++;
      try {
        const r = await this.#writer.runExclusive((db: unknown) => fn(db as SqliteDb), opts);
        return r.value;
      } catch (e) {
        // A job dropped from the coordinator's queue by our signal ran nothing.
        if (signal?.aborted) throw aborted(signal, e);
        throw e;
      } finally {
        this.#inFlight--;
      }
    }
    const db = this.db;
    return db.transaction(() => fn(db)).immediate();
  }

  /**
   * One long atomic write that never holds the event loop for long. `fn` is a generator; each
   * `yield` is a point where the work may pause. On a better-sqlite3 database backed by a file in
   * WAL mode the whole generator runs in ONE transaction (BEGIN IMMEDIATE … COMMIT) on a second
   * connection to the same file (the apply connection), and whenever a slice ran for
   * `SLICE_BUDGET_MS` the event loop gets a turn. Meanwhile the app's connection keeps reading the
   * last committed state (WAL snapshot isolation): it never sees a half-applied snapshot or
   * bundle, and a crash before COMMIT leaves the previous state. Work of more than
   * `LONG_WORK_ROWS` rows runs on an apply connection owned by a worker thread (the generator
   * still runs here, each statement a synchronous call to the worker), so that the COMMIT, which
   * grows with the transaction, runs in the worker while the event loop turns. After a sliced
   * transaction the worker checkpoints the WAL. Elsewhere (coordinator, in-memory or non-WAL
   * database, a transaction left open on the app's connection) the generator runs to its end in
   * one `tx`, as before, and so does work whose caller announces at most `SMALL_WORK_ROWS` rows.
   *
   * While the slices hold the write lock, the app's connection has a busy timeout of 0 (restored
   * at the end): an app write on it cannot succeed before COMMIT (the apply connection cannot move
   * on while the thread waits), so it fails at once with `SQLITE_BUSY` instead of blocking the
   * thread for the whole busy timeout first.
   *
   * On the apply connection the generator may also yield a promise: the runner awaits it (the
   * event loop turns, the write lock stays held) and resumes the generator with its value, or
   * rolls back with its rejection. A stage-free hydrate waits this way for each page of its
   * download inside its one transaction, and a statement run in the worker (`runWrite` in
   * table-ops.ts) is awaited the same way. Work that waits for something outside the database
   * passes `waits`: it needs the apply connection whatever its size, and where none can be
   * opened, `NoApplyConnection` is thrown before the generator starts.
   */
  async sliced<T>(
    fn: (db: SqliteDb) => Generator<unknown, T, unknown>,
    signal?: AbortSignal,
    rows?: number,
    opts: { waits?: boolean } = {},
  ): Promise<T> {
    if (signal?.aborted) throw aborted(signal);
    const waits = opts.waits === true;
    if (!waits && rows !== undefined && rows <= SMALL_WORK_ROWS)
      return this.tx((db) => drain(fn(db)), signal);
    const long = rows === undefined || rows > LONG_WORK_ROWS;
    // in flight from here: the worker may take a few turns to start
    this.#inFlight++;
    let side: SqliteDb | undefined;
    try {
      side = (long ? await this.#workerConnection() : undefined) ?? this.#applyConnection();
    } finally {
      if (!side) this.#inFlight--;
    }
    if (!side) {
      if (waits) throw new NoApplyConnection();
      return this.tx((db) => drain(fn(db)), signal);
    }
    let slices = 0;
    let unlock: (() => void) | undefined;
    try {
      side.exec('BEGIN IMMEDIATE');
      let value: T;
      let it: Generator<unknown, T, unknown> | undefined;
      try {
        it = fn(side);
        let t0 = performance.now();
        let sent: unknown;
        for (;;) {
          const r = it.next(sent);
          sent = undefined;
          if (r.done) {
            value = r.value;
            break;
          }
          if (isPromiseLike(r.value)) {
            // The generator waits (a page of a download): the write lock stays held, app writes
            // wait in `appWrite`, the app's connection reads the last committed state.
            unlock ??= this.#holdLock();
            // A promise settled already (a page parsed ahead, a batch the worker has finished)
            // resumes the generator in a microtask, without a turn of the event loop: then the
            // slice goes on and its time still counts.
            let turned = false;
            const mark = setImmediate(() => {
              turned = true;
            });
            sent = await r.value;
            clearImmediate(mark);
            slices++;
            if (signal?.aborted) throw aborted(signal);
            if (turned) {
              t0 = performance.now();
              continue;
            }
          }
          if (performance.now() - t0 >= SLICE_BUDGET_MS) {
            unlock ??= this.#holdLock();
            await yieldToLoop();
            slices++;
            if (signal?.aborted) throw aborted(signal);
            t0 = performance.now();
          }
        }
        if (slices > 0 && side instanceof WorkerConnection) {
          // A long transaction's COMMIT grows with it (see apply-worker.ts): it runs in the
          // worker while the event loop turns.
          await side.execAsync('COMMIT');
        } else {
          side.exec('COMMIT');
        }
      } catch (e) {
        try {
          it?.return(undefined as T);
        } catch {
          // the generator's own cleanup failed: the transaction rolls back anyway
        }
        if (side instanceof WorkerConnection) {
          // a statement the generator sent ahead and never awaited finishes first
          await side.idle();
          side.discardQueued();
        }
        if (side.open && side.inTransaction) side.exec('ROLLBACK');
        throw e;
      }
      if (slices === 0) return value;
      unlock?.();
      unlock = undefined;
      // The WAL a sliced transaction wrote is copied into the database file in the worker (a
      // checkpoint of a 1M-row WAL takes seconds; the apply connections never autocheckpoint).
      const w = side instanceof WorkerConnection ? side : await this.#workerConnection();
      try {
        await w?.execAsync('PRAGMA wal_checkpoint(PASSIVE)');
      } catch {
        // a later commit checkpoints as usual
      }
      return value;
    } finally {
      unlock?.();
      this.#inFlight--;
      this.#releaseApplyConnection();
    }
  }

  /** Marks the write lock held by a sliced apply; the returned function ends that. */
  #holdLock(): () => void {
    const restoreBusy = failFastWhileLocked(this.db);
    let release = () => {};
    this.#locked = new Promise<void>((resolve) => {
      release = resolve;
    });
    return () => {
      restoreBusy();
      this.#locked = undefined;
      release();
    };
  }

  /**
   * One write transaction of the app's (`client.writeTransaction`): like `tx`, but while a large
   * sliced apply holds the write lock it waits for that apply's COMMIT or ROLLBACK instead of
   * meeting the lock (where a direct write fails at once with `SQLITE_BUSY`).
   */
  async appWrite<T>(fn: (db: SqliteDb) => T, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw aborted(signal);
    while (this.#locked) {
      await this.#locked;
      if (signal?.aborted) throw aborted(signal);
    }
    return this.tx(fn, signal);
  }

  /** Whether the client may open a second connection to its database file (see `sliced`). */
  #canOpenSide(): boolean {
    if (isCoordinator(this.#writer)) return false;
    const db = this.db;
    if (db.memory || !db.name || db.name === ':memory:' || !db.open || db.inTransaction) return false;
    return String(db.pragma('journal_mode', { simple: true })).toLowerCase() === 'wal';
  }

  #sidePragmas(): string[] {
    return [
      'foreign_keys = ON',
      `synchronous = ${Number(this.db.pragma('synchronous', { simple: true }))}`,
      // Its commits never checkpoint on their own: the worker does after a sliced transaction.
      'wal_autocheckpoint = 0',
      // A small page cache: a long transaction's dirty pages spill to the WAL a page at a time
      // during the slices, and COMMIT writes only what is left in the cache (with better-sqlite3's
      // 16 MB default, the COMMIT of a 100k-row apply wrote up to 16 MB in one block).
      `cache_size = -${APPLY_CACHE_KIB}`,
    ];
  }

  /**
   * The apply connection for medium work (opened on first use, on this thread), or undefined
   * where `sliced` falls back to `tx`.
   */
  #applyConnection(): SqliteDb | undefined {
    this.#cancelIdleClose();
    if (this.#apply?.open) return this.#apply;
    this.#apply = undefined;
    if (!this.#canOpenSide()) return undefined;
    const db = this.db;
    const Ctor = (db as { constructor?: unknown }).constructor as
      | (new (
          file: string,
          opts?: { fileMustExist?: boolean; timeout?: number },
        ) => SqliteDb & { close(): void })
      | undefined;
    if (typeof Ctor !== 'function') return undefined;
    let side: SqliteDb & { close(): void };
    try {
      side = new Ctor(db.name, { fileMustExist: true, timeout: 5_000 });
    } catch {
      return undefined;
    }
    for (const p of this.#sidePragmas()) side.pragma(p);
    this.#apply = side;
    return side;
  }

  /**
   * The apply connection for long work, owned by a worker thread (see apply-worker.ts; opened on
   * first use), or undefined where it cannot run.
   */
  async #workerConnection(): Promise<WorkerConnection | undefined> {
    this.#cancelIdleClose();
    if (this.#applyWorker?.open) return this.#applyWorker;
    this.#applyWorker = undefined;
    if (!this.#canOpenSide()) return undefined;
    const db = this.db;
    const Ctor = (db as { constructor?: { SqliteError?: unknown } }).constructor;
    const side = await WorkerConnection.open(db.name, {
      timeout: 5_000,
      pragmas: this.#sidePragmas(),
      ...(typeof Ctor?.SqliteError === 'function'
        ? { sqliteError: Ctor.SqliteError as new (message: string, code: string) => Error }
        : {}),
    });
    this.#cancelIdleClose();
    // another call may have opened one meanwhile
    const other = this.#applyWorker as WorkerConnection | undefined;
    if (other?.open) {
      side?.close();
      return other;
    }
    if (!side || !db.open) {
      side?.close();
      return undefined;
    }
    this.#applyWorker = side;
    return side;
  }

  #cancelIdleClose(): void {
    if (this.#applyIdle) clearTimeout(this.#applyIdle);
    this.#applyIdle = undefined;
  }

  #releaseApplyConnection(): void {
    if ((!this.#apply && !this.#applyWorker) || this.#inFlight > 0) return;
    this.#cancelIdleClose();
    this.#applyIdle = setTimeout(() => {
      this.#applyIdle = undefined;
      if (this.#inFlight > 0) return;
      const side = this.#apply as (SqliteDb & { close?: () => void }) | undefined;
      if (side && !(side.open && side.inTransaction)) {
        this.#apply = undefined;
        side.close?.();
      }
      const w = this.#applyWorker;
      if (w && !(w.open && w.inTransaction)) {
        this.#applyWorker = undefined;
        w.close();
      }
    }, APPLY_CONNECTION_IDLE_MS);
    this.#applyIdle.unref?.();
  }

  /**
   * One read: `fn` must not write, and it never runs as an exclusive write job when it can run as a
   * read. On a better-sqlite3 database it runs in a deferred (read) transaction on the same
   * connection, so its statements see one snapshot. On a coordinator it uses the coordinator's
   * `read` when it offers one; else it runs the same deferred transaction on the coordinator's
   * connection when no transaction is open there (better-sqlite3 is synchronous: no job of the
   * coordinator can run in between, and only committed state is seen). Only when the connection is
   * not reachable or a transaction is open does it queue as an exclusive job (`tx`).
   */
  async read<T>(fn: (db: SqliteDb) => T, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw aborted(signal);
    const w = this.#writer;
    if (isCoordinator(w)) {
      if (typeof w.read === 'function') {
        try {
          return await w.read((db: never) => fn(db as SqliteDb), signal ? { signal } : {});
        } catch (e) {
          if (signal?.aborted) throw aborted(signal, e);
          throw e;
        }
      }
      const db = isSqliteDb(w.options.database) ? w.options.database : undefined;
      if (db === undefined || !db.open || db.inTransaction) return this.tx(fn, signal);
      return db.transaction(() => fn(db)).deferred();
    }
    const db = this.db;
    return db.transaction(() => fn(db)).deferred();
  }
}
