/** This process's read-only connection and `read()`: a read transaction once a sequence is visible. */
import { existsSync } from 'node:fs';
import { type Emitter, sleep } from '@x/core';
import { META_TABLE, type SqliteDatabase } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { wireError } from '../errors.js';

/**
 * This process's read-only connection to the database file (opened once the file exists), the
 * committed sequence it sees, and `read()`: a function run in one read transaction once the
 * connection has caught up with a sequence.
 */
export class LocalReader {
  readonly #dbPath: string;
  readonly #busyTimeoutMs: number;
  #db: Database.Database | null = null;
  #seqStmt: Database.Statement | null = null;

  constructor(dbPath: string, busyTimeoutMs: number) {
    this.#dbPath = dbPath;
    this.#busyTimeoutMs = busyTimeoutMs;
  }

  open(): Database.Database | null {
    if (this.#db !== null) return this.#db;
    if (!existsSync(this.#dbPath)) return null;
    const db = new Database(this.#dbPath, {
      readonly: true,
      fileMustExist: true,
      timeout: this.#busyTimeoutMs,
    });
    this.#db = db;
    return db;
  }

  /** The committed sequence the file holds now (0 for a file no primary created yet). */
  committedSeqNow(): number {
    const db = this.open();
    if (db === null) return 0;
    try {
      return db.transaction(() => this.#committedSeq(db))();
    } catch {
      return 0;
    }
  }

  #committedSeq(db: Database.Database): number {
    if (this.#seqStmt === null) {
      try {
        this.#seqStmt = db.prepare(`SELECT value FROM ${META_TABLE} WHERE key = 'seq'`);
      } catch {
        return 0; // no coordinator has run on this file yet
      }
    }
    const row = this.#seqStmt.get() as { value: number | bigint } | undefined;
    return row === undefined ? 0 : Number(row.value);
  }

  /**
   * Runs `fn` once the connection sees `minSeq`, polling (woken by `seqAdvanced`) until `timeoutMs`.
   * `closed()` returns the error to throw once the proxy is closing.
   */
  async read<T>(
    fn: (db: SqliteDatabase) => T,
    minSeq: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
    seqAdvanced: Emitter<{ changed: undefined }>,
    closed: () => Error | null,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let seen = 0;
    for (;;) {
      const closedError = closed();
      if (closedError !== null) throw closedError;
      const db = this.open();
      if (db !== null) {
        let miss = false;
        // One read transaction: the sequence check and fn see the same snapshot.
        const value = db.transaction(() => {
          seen = this.#committedSeq(db);
          if (seen < minSeq) {
            miss = true;
            return undefined;
          }
          return fn(db as unknown as SqliteDatabase);
        })();
        if (!miss) {
          if (value instanceof Promise) throw new TypeError('read(fn): fn must be synchronous');
          return value as T;
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw wireError('TIMEOUT', `the local database did not reach seq ${minSeq} within ${timeoutMs} ms`, {
          details: { minSeq, seq: seen },
        });
      }
      await sleep(Math.min(left, 5), { signal, wake: (wakeUp) => seqAdvanced.once('changed', wakeUp) });
    }
  }

  close(): void {
    this.#db?.close();
    this.#db = null;
  }
}
