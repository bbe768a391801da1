/** Live queries outside the sync client's process: over any reader with a commit feed (a dbproxy secondary). */
import { type LiveSource, watchLive } from './internal/live-query.js';
import type { WatchHandlers, WatchOptions, WatchParams } from './types.js';
import type { SqliteDb } from './writer-types.js';

/**
 * The connection a {@link WatchSource} reads on, as far as a live query uses it: it prepares
 * statements (better-sqlite3's `prepare`; dbproxy's `SqliteDatabase` fits).
 */
export interface WatchDb {
  /** Compiles one statement. */
  prepare(sql: string): unknown;
}

/**
 * What `watchQuery()` reads through and hears commits from: the structural subset of an
 * `@x/dbproxy` `DbProxy` it uses (any process's proxy, the secondaries' included).
 */
export interface WatchSource {
  /** Runs `fn` in one read transaction once the reader sees commit `minSeq`. */
  read<T>(fn: (db: WatchDb) => T, opts?: { signal?: AbortSignal; minSeq?: number }): Promise<T>;
  /**
   * Every commit of the file, from any process: `{ type: 'write', seq }`, or `{ type: 'gap',
   * toSeq }` for commits it could not deliver. The iteration ends when the source closes.
   */
  changes(opts?: {
    signal?: AbortSignal;
  }): AsyncIterable<{ readonly type: string; readonly seq?: number; readonly toSeq?: number }>;
}

function commitSource(source: WatchSource): LiveSource {
  return {
    read: (fn, signal, minSeq) =>
      source.read(
        (db) => fn(db as unknown as SqliteDb),
        minSeq === undefined ? { signal } : { signal, minSeq },
      ),
    subscribe(change, end) {
      const ac = new AbortController();
      void (async () => {
        try {
          for await (const e of source.changes({ signal: ac.signal })) {
            // A commit event names no tables: every commit may touch the query's.
            change(undefined, e.type === 'gap' ? e.toSeq : e.seq);
          }
          if (!ac.signal.aborted) end();
        } catch (error) {
          if (!ac.signal.aborted) end(error);
        }
      })();
      return () => ac.abort();
    },
  };
}

/**
 * A live query in a process that has no sync client of its own, e.g. a dbproxy secondary of a
 * device whose primary runs the client: reads run on the source's own (read-only) connection, and
 * every commit of the file, from any process (the app's writes, the sync client's pulls and
 * replays in the primary), re-runs the query. A commit event does not say which tables it
 * touched, so every commit counts; the throttle coalesces bursts and an unchanged result is not
 * yielded again. Without `onResult` it returns an async iterable (as `client.watch()` does); with
 * it, the function that ends the watch.
 *
 * @example
 * ```ts
 * import { watchQuery } from '@x/oversync/client';
 *
 * // `proxy` is this process's `@x/dbproxy` handle on the device's database (a secondary here).
 * declare const proxy: Parameters<typeof watchQuery>[0];
 * const ac = new AbortController();
 * for await (const rows of watchQuery<{ n: number }>(proxy, 'SELECT count(*) AS n FROM users', [], {
 *   signal: ac.signal,
 * })) {
 *   console.log('users on this device:', rows[0]?.n);
 *   if ((rows[0]?.n ?? 0) >= 10) ac.abort();
 * }
 * ```
 */
export function watchQuery<R = Record<string, unknown>>(
  source: WatchSource,
  sql: string,
  params?: WatchParams,
  options?: WatchOptions,
): AsyncIterable<R[]>;
/**
 * The callback form of {@link watchQuery}: `onResult` gets each result, `onError` the error that
 * ended the watch; returns the function that ends it.
 *
 * @example
 * ```ts
 * import { watchQuery } from '@x/oversync/client';
 *
 * declare const proxy: Parameters<typeof watchQuery>[0];
 * const stop = watchQuery<{ n: number }>(proxy, 'SELECT count(*) AS n FROM users', [], {
 *   onResult: (rows) => console.log('users:', rows[0]?.n),
 *   onError: (e) => console.error('watch ended', e),
 * });
 * stop();
 * ```
 */
export function watchQuery<R = Record<string, unknown>>(
  source: WatchSource,
  sql: string,
  params: WatchParams | undefined,
  options: WatchOptions & WatchHandlers<R>,
): () => void;
export function watchQuery<R>(
  source: WatchSource,
  sql: string,
  params?: WatchParams,
  options: WatchOptions & Partial<WatchHandlers<R>> = {},
): AsyncIterable<R[]> | (() => void) {
  return watchLive<R>(() => commitSource(source), sql, params, options);
}
