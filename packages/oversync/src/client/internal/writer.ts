import { ClientError } from '../errors.js';
import type { CoordinatorLike, SqliteDb, SyncWriter } from '../writer-types.js';

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
