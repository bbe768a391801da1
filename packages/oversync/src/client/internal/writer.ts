import { createRequire } from 'node:module';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { ClientError } from '../errors.js';
import type { CoordinatorLike, SqliteDb, SyncWriter } from '../writer-types.js';

/**
 * A long write runs as a generator: each `yield` marks a point where the work may pause. On the
 * apply connection the runner gives the event loop a turn whenever a slice has run this long.
 */
export const SLICE_BUDGET_MS = 12;
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
function drain<T>(it: Generator<unknown, T, undefined>): T {
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

/**
 * Checkpoints the WAL in a worker thread, so the pages a long transaction wrote are copied into
 * the database file off the event loop (a checkpoint in the main thread after a 1M-row commit
 * takes seconds; it would otherwise run at the next commit of any connection on the file). One
 * worker per apply connection, closed with it. `run` never rejects: when the worker cannot run,
 * the WAL is checkpointed as usual by a later commit.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.lib);
const db = new Database(workerData.file, { fileMustExist: true, timeout: 0 });
parentPort.on('message', (m) => {
  if (m === 'exit') { db.close(); parentPort.close(); return; }
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch {}
  parentPort.postMessage('done');
});
parentPort.postMessage('ready');`;
let sqliteLib: string | null | undefined;
class Checkpointer {
  readonly ready: Promise<boolean>;
  readonly #w: Worker | undefined;
  #waiting: Array<() => void> = [];
  constructor(file: string) {
    if (sqliteLib === undefined) {
      try {
        sqliteLib = createRequire(import.meta.url).resolve('better-sqlite3');
      } catch {
        sqliteLib = null;
      }
    }
    if (sqliteLib === null) {
      this.ready = Promise.resolve(false);
      return;
    }
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { lib: sqliteLib, file } });
    w.unref();
    this.#w = w;
    const flush = () => {
      for (const f of this.#waiting.splice(0)) f();
    };
    this.ready = new Promise<boolean>((resolve) => {
      w.on('message', (m) => {
        if (m === 'ready') resolve(true);
        else this.#waiting.shift()?.();
      });
      w.on('error', () => {
        resolve(false);
        flush();
      });
      w.on('exit', () => {
        resolve(false);
        flush();
      });
    });
  }
  async run(): Promise<void> {
    if (!this.#w || !(await this.ready)) return;
    const done = new Promise<void>((r) => this.#waiting.push(r));
    this.#w.postMessage('go');
    await done;
  }
  close(): void {
    this.#w?.postMessage('exit');
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
  #applyIdle: ReturnType<typeof setTimeout> | undefined;
  #checkpointer: Checkpointer | undefined;
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
   * bundle, and a crash before COMMIT leaves the previous state. After a long transaction the
   * WAL is checkpointed in a worker thread. Elsewhere (coordinator, in-memory or non-WAL
   * database, a transaction left open on the app's connection) the generator runs to its end in
   * one `tx`, as before, and so does work whose caller announces at most `SMALL_WORK_ROWS` rows.
   *
   * While the slices hold the write lock, the app's connection has a busy timeout of 0 (restored
   * at the end): an app write on it cannot succeed before COMMIT (the apply connection cannot move
   * on while the thread waits), so it fails at once with `SQLITE_BUSY` instead of blocking the
   * thread for the whole busy timeout first.
   */
  async sliced<T>(
    fn: (db: SqliteDb) => Generator<unknown, T, undefined>,
    signal?: AbortSignal,
    rows?: number,
  ): Promise<T> {
    if (signal?.aborted) throw aborted(signal);
    const side = rows !== undefined && rows <= SMALL_WORK_ROWS ? undefined : this.#applyConnection();
    if (!side) return this.tx((db) => drain(fn(db)), signal);
    this.#inFlight++;
    let slices = 0;
    let unlock: (() => void) | undefined;
    try {
      side.exec('BEGIN IMMEDIATE');
      let value: T;
      try {
        const it = fn(side);
        let t0 = performance.now();
        for (;;) {
          const r = it.next();
          if (r.done) {
            value = r.value;
            break;
          }
          if (performance.now() - t0 >= SLICE_BUDGET_MS) {
            unlock ??= this.#holdLock();
            await yieldToLoop();
            slices++;
            if (signal?.aborted) throw aborted(signal);
            t0 = performance.now();
          }
        }
      } catch (e) {
        if (side.inTransaction) side.exec('ROLLBACK');
        throw e;
      }
      if (slices === 0) {
        side.exec('COMMIT');
        return value;
      }
      // A long transaction: have the checkpointer ready before COMMIT, then let it copy the WAL.
      this.#checkpointer ??= new Checkpointer(side.name);
      await this.#checkpointer.ready;
      side.exec('COMMIT');
      unlock?.();
      unlock = undefined;
      await this.#checkpointer.run();
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

  /** The apply connection (opened on first use), or undefined where `sliced` falls back to `tx`. */
  #applyConnection(): SqliteDb | undefined {
    if (this.#applyIdle) clearTimeout(this.#applyIdle);
    this.#applyIdle = undefined;
    if (this.#apply?.open) return this.#apply;
    this.#apply = undefined;
    if (isCoordinator(this.#writer)) return undefined;
    const db = this.db;
    if (db.memory || !db.name || db.name === ':memory:' || !db.open || db.inTransaction) return undefined;
    if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
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
    side.pragma('foreign_keys = ON');
    side.pragma(`synchronous = ${Number(db.pragma('synchronous', { simple: true }))}`);
    // Its commits never checkpoint in the main thread: a worker does (see `sliced`).
    side.pragma('wal_autocheckpoint = 0');
    // A small page cache: a long transaction's dirty pages spill to the WAL a page at a time
    // during the slices, and COMMIT writes only what is left in the cache (with better-sqlite3's
    // 16 MB default, the COMMIT of a 100k-row apply wrote up to 16 MB in one block of 30-150 ms).
    side.pragma(`cache_size = -${APPLY_CACHE_KIB}`);
    this.#apply = side;
    return side;
  }

  #releaseApplyConnection(): void {
    const side = this.#apply as (SqliteDb & { close?: () => void }) | undefined;
    if (!side || this.#inFlight > 0) return;
    this.#applyIdle = setTimeout(() => {
      this.#applyIdle = undefined;
      if (this.#apply === side && !side.inTransaction) {
        this.#apply = undefined;
        side.close?.();
        this.#checkpointer?.close();
        this.#checkpointer = undefined;
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
