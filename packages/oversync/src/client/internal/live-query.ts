/**
 * Live queries: a read-only statement re-run after every change that may touch a table it reads,
 * coalesced (one re-run per `throttleMs` burst), yielding only results that differ from the
 * previous one (compared by a SHA-1 of the rows). Used by `client.watch()` (notices from the
 * client's write hook, `applied` events and `notifyLocalChange()`) and by `watchQuery()` (notices
 * from a dbproxy change feed).
 *
 * The tables a statement reads come from SQLite: the `OpenRead`/`ReopenIdx` opcodes of its
 * `EXPLAIN` program name the root page of each table or index it opens, and the schema table maps
 * root pages to tables. Views are compiled into their base tables, joins and subqueries open each
 * table they read. A program that opens a virtual table (`VOpen`) cannot be mapped: such a query
 * re-runs on every notice.
 */
import { createHash } from 'node:crypto';
import { ClientError } from '../errors.js';
import { DEFAULT_LIVE_QUERY_THROTTLE_MS } from '../options.js';
import type { WatchHandlers, WatchOptions, WatchParams } from '../types.js';
import type { SqliteDb } from '../writer-types.js';

/** Table keys a query reads (`table` in main, `schema.table` elsewhere, lowercase); undefined: cannot tell. */
export type TableSet = ReadonlySet<string> | undefined;

/** What a live query uses of a prepared statement. */
interface Statement {
  readonly reader: boolean;
  readonly readonly: boolean;
  all(...params: unknown[]): unknown[];
}

function prepare(db: SqliteDb, sql: string): Statement {
  return db.prepare(sql) as unknown as Statement;
}

function bindArgs(params: WatchParams | undefined): unknown[] {
  if (params === undefined) return [];
  return Array.isArray(params) ? [...params] : [params];
}

/** The tables a statement reads, found from its compiled program (see the module comment). */
export function tablesRead(db: SqliteDb, sql: string, params: WatchParams | undefined): TableSet {
  const program = prepare(db, `EXPLAIN ${sql}`).all(...bindArgs(params)) as Array<{
    opcode: string;
    p2: number;
    p3: number;
  }>;
  const schemas = new Map<number, string>();
  const list = prepare(db, 'SELECT seq, name FROM pragma_database_list').all() as Array<{
    seq: number;
    name: string;
  }>;
  for (const r of list) {
    schemas.set(r.seq, r.name);
  }
  const tables = new Set<string>();
  for (const op of program) {
    if (op.opcode === 'VOpen') return undefined;
    if (op.opcode !== 'OpenRead' && op.opcode !== 'ReopenIdx') continue;
    const schema = schemas.get(op.p3);
    if (schema === undefined) return undefined;
    const master =
      schema === 'temp' ? 'sqlite_temp_master' : `"${schema.replaceAll('"', '""')}".sqlite_master`;
    const name =
      op.p2 === 1
        ? 'sqlite_master'
        : (
            prepare(db, `SELECT tbl_name FROM ${master} WHERE rootpage = ?`).all(op.p2) as Array<{
              tbl_name: string;
            }>
          )[0]?.tbl_name;
    if (name === undefined) return undefined;
    const t = name.toLowerCase();
    tables.add(schema === 'main' ? t : `${schema.toLowerCase()}.${t}`);
  }
  return tables;
}

/** A stable digest of a result, to tell whether it changed. */
function digest(rows: readonly unknown[]): string {
  const json = JSON.stringify(rows, (_k, v: unknown) => (typeof v === 'bigint' ? { $bigint: `${v}` } : v));
  return createHash('sha1').update(json).digest('base64');
}

/** Where a live query reads and hears of changes. */
export interface LiveSource {
  /** Runs `fn` in one read transaction; `minSeq` (when known) is a commit the read must see. */
  read<T>(fn: (db: SqliteDb) => T, signal: AbortSignal, minSeq: number | undefined): Promise<T>;
  /**
   * Subscribes to change notices: `tables` touched (undefined: any), `seq` a commit sequence when
   * the source has one. `end` ends the query (the source closed; with an error, it failed).
   * Returns the unsubscribe.
   */
  subscribe(change: (tables: TableSet, seq?: number) => void, end: (error?: unknown) => void): () => void;
  /**
   * Called synchronously inside the first read with the tables found, so notices of writes to
   * them start before any write can slip in; returns what stops them.
   */
  track?(tables: ReadonlySet<string>): () => void;
}

/** What a live query reports to. */
interface LiveSink<R> {
  result(rows: R[]): void;
  /** Ends the query with an error (nothing is reported after it). */
  error(error: unknown): void;
  /** Ends the query quietly. */
  end(): void;
}

/** One running live query; `stop()` ends it (idempotent). */
class LiveQuery<R> {
  readonly #source: LiveSource;
  readonly #sql: string;
  readonly #params: WatchParams | undefined;
  readonly #throttleMs: number;
  readonly #sink: LiveSink<R>;
  readonly #ac = new AbortController();
  #tables: TableSet | null = null;
  #stmt: { db: SqliteDb; stmt: Statement } | undefined;
  #lastDigest: string | undefined;
  #minSeq: number | undefined;
  #dirty = false;
  #running = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #cleanup: Array<() => void> = [];

  constructor(
    source: LiveSource,
    sql: string,
    params: WatchParams | undefined,
    throttleMs: number,
    sink: LiveSink<R>,
  ) {
    this.#source = source;
    this.#sql = sql;
    this.#params = params;
    this.#throttleMs = throttleMs;
    this.#sink = sink;
  }

  start(): void {
    this.#cleanup.push(
      this.#source.subscribe(
        (tables, seq) => this.#changed(tables, seq),
        (error) => (error === undefined ? this.#finish() : this.#fail(error)),
      ),
    );
    if (this.#stopped) return;
    this.#dirty = true;
    void this.#run();
  }

  #changed(tables: TableSet, seq: number | undefined): void {
    if (this.#stopped) return;
    if (seq !== undefined) this.#minSeq = Math.max(this.#minSeq ?? 0, seq);
    const mine = this.#tables;
    // Before the first read has found the tables (null), any notice counts.
    if (mine && tables) {
      let hit = false;
      for (const t of tables) {
        if (mine.has(t)) {
          hit = true;
          break;
        }
      }
      if (!hit) return;
    }
    this.#dirty = true;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopped || this.#running || this.#timer !== undefined || !this.#dirty) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#run();
    }, this.#throttleMs);
  }

  #query(db: SqliteDb): R[] {
    if (this.#tables === null) {
      const stmt = prepare(db, this.#sql);
      if (!stmt.reader || !stmt.readonly) {
        throw new ClientError(
          'OVERSYNC_CLIENT_INVALID_OPTIONS',
          'watch: the statement must be a read-only query that returns rows',
        );
      }
      const tables = tablesRead(db, this.#sql, this.#params);
      this.#tables = tables;
      if (tables && this.#source.track) this.#cleanup.push(this.#source.track(tables));
    }
    if (this.#stmt?.db !== db) this.#stmt = { db, stmt: prepare(db, this.#sql) };
    return this.#stmt.stmt.all(...bindArgs(this.#params)) as R[];
  }

  async #run(): Promise<void> {
    if (this.#stopped) return;
    this.#running = true;
    this.#dirty = false;
    try {
      const rows = await this.#source.read((db) => this.#query(db), this.#ac.signal, this.#minSeq);
      if (this.#stopped) return;
      const d = digest(rows);
      if (d !== this.#lastDigest) {
        this.#lastDigest = d;
        this.#sink.result(rows);
      }
    } catch (error) {
      this.#fail(error);
      return;
    } finally {
      this.#running = false;
    }
    this.#schedule();
  }

  #fail(error: unknown): void {
    if (this.#stopped) return;
    this.stop();
    this.#sink.error(error);
  }

  #finish(): void {
    if (this.#stopped) return;
    this.stop();
    this.#sink.end();
  }

  /** Ends the query: no more reads, notices released. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#ac.abort();
    for (const c of this.#cleanup.splice(0)) c();
  }
}

/**
 * The iterator of one `for await`: it holds only the newest result a slow consumer has not taken
 * yet (a live query's consumer wants the current state, not a backlog).
 */
class LatestIterator<R> implements AsyncIterableIterator<R[]> {
  #latest: { rows: R[] } | undefined;
  #error: { error: unknown } | undefined;
  #done = false;
  #waiter: { resolve(r: IteratorResult<R[]>): void; reject(e: unknown): void } | undefined;
  #onReturn: () => void;

  constructor(onReturn: () => void) {
    this.#onReturn = onReturn;
  }

  readonly sink: LiveSink<R> = {
    result: (rows) => {
      const w = this.#waiter;
      if (w) {
        this.#waiter = undefined;
        w.resolve({ value: rows, done: false });
      } else this.#latest = { rows };
    },
    error: (error) => {
      this.#done = true;
      const w = this.#waiter;
      if (w) {
        this.#waiter = undefined;
        w.reject(error);
      } else this.#error = { error };
    },
    end: () => {
      this.#done = true;
      const w = this.#waiter;
      this.#waiter = undefined;
      w?.resolve({ value: undefined, done: true });
    },
  };

  next(): Promise<IteratorResult<R[]>> {
    const latest = this.#latest;
    if (latest) {
      this.#latest = undefined;
      return Promise.resolve({ value: latest.rows, done: false });
    }
    const err = this.#error;
    if (err) {
      this.#error = undefined;
      return Promise.reject(err.error);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<R[]>> {
    this.#latest = undefined;
    this.#error = undefined;
    this.#onReturn();
    this.sink.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<R[]> {
    return this;
  }
}

/**
 * Starts one live query reporting to `sink`, unless the source is unavailable (`closed` gets its
 * error) or the signal has aborted (nothing runs). Returns what ends it early.
 */
function startQuery<R>(
  source: () => LiveSource | ClientError,
  sql: string,
  params: WatchParams | undefined,
  throttleMs: number,
  signal: AbortSignal | undefined,
  sink: LiveSink<R> & { closed(error: ClientError): void },
): () => void {
  const src = source();
  if (src instanceof ClientError) {
    sink.closed(src);
    return () => {};
  }
  if (signal?.aborted) {
    sink.end();
    return () => {};
  }
  const onAbort = () => {
    q.stop();
    sink.end();
  };
  const detach = () => signal?.removeEventListener('abort', onAbort);
  const q = new LiveQuery<R>(src, sql, params, throttleMs, {
    result: (rows) => sink.result(rows),
    error: (e) => {
      detach();
      sink.error(e);
    },
    end: () => {
      detach();
      sink.end();
    },
  });
  signal?.addEventListener('abort', onAbort, { once: true });
  q.start();
  return () => {
    detach();
    q.stop();
  };
}

/**
 * `client.watch()` and `watchQuery()`: with `onResult`, a callback watch (returns what ends it);
 * else an async iterable whose every iteration runs its own query, ended by the loop's
 * `return()`, the signal or the source.
 */
export function watchLive<R>(
  source: () => LiveSource | ClientError,
  sql: string,
  params: WatchParams | undefined,
  options: WatchOptions & Partial<WatchHandlers<R>>,
): AsyncIterable<R[]> | (() => void) {
  const throttleMs = options.throttleMs ?? DEFAULT_LIVE_QUERY_THROTTLE_MS;
  if (!Number.isFinite(throttleMs) || throttleMs < 0) {
    throw new ClientError(
      'OVERSYNC_CLIENT_INVALID_OPTIONS',
      `watch: throttleMs must be a non-negative number, got ${throttleMs}`,
    );
  }
  const { onResult, onError, signal } = options;
  if (typeof onResult === 'function') {
    const report = (e: unknown) => onError?.(e);
    return startQuery<R>(source, sql, params, throttleMs, signal, {
      result: onResult,
      error: report,
      closed: report,
      end: () => {},
    });
  }
  return {
    [Symbol.asyncIterator]: () => {
      let stop = () => {};
      const it = new LatestIterator<R>(() => stop());
      // a closed source ends the iteration quietly, as `changes()` does
      stop = startQuery<R>(source, sql, params, throttleMs, signal, { ...it.sink, closed: it.sink.end });
      return it;
    },
  };
}
