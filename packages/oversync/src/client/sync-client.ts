/** The public interface of the sync client (`createSyncClient` in client.ts returns one). */
import type { SyncClientOptions } from './options.js';
import type {
  AppliedEvent,
  AttachResult,
  ClientEvents,
  ClientStatus,
  ConflictQuery,
  ConflictRecord,
  DetachResult,
  PendingStatus,
  PullReport,
  PushReport,
  RebuildReport,
  SyncReport,
  SyncStatus,
  SyncThenDetachResult,
  WatchHandlers,
  WatchOptions,
  WatchParams,
} from './types.js';
import type { SqliteDb } from './writer-types.js';

/** The client's counters since creation ({@link SyncClient.metrics}). */
export interface ClientMetrics {
  readonly bundlesPushed: number;
  readonly bundlesPulled: number;
  readonly snapshotsApplied: number;
  readonly rowsApplied: number;
  readonly conflictsResolved: number;
  readonly operationErrors: number;
  readonly connected: boolean;
  readonly backgroundRunning: boolean;
}

/** Per-call options of the client's operations. */
export interface OpOptions {
  signal?: AbortSignal;
}

/** An offline-first sync client over one local SQLite database. */
export interface SyncClient {
  readonly options: SyncClientOptions;
  /** The current sync source id ('' before `open()`). */
  readonly sourceId: string;
  /** The attached user ('' when anonymous). */
  readonly userId: string;
  /** True after a successful `attach()` in this process. */
  readonly connected: boolean;
  /**
   * Installs the client's metadata tables and triggers and loads the source id; rows that existed
   * before the first open become local intents. Needed before every other operation.
   */
  open(opts?: OpOptions): Promise<void>;
  /**
   * Binds the database to `userId`'s scope on the server: resumes, starts empty, seeds the scope
   * from local rows, or hydrates from a snapshot (`outcome`), or answers `retry_later`.
   */
  attach(userId: string, opts?: OpOptions): Promise<AttachResult>;
  /**
   * Wipes the user's data and starts a fresh source id, ready for another user. Returns
   * `blocked_unsynced_data` while anything is unsynced, unless `force: true`.
   */
  detach(opts?: OpOptions & { force?: boolean }): Promise<DetachResult>;
  /** `sync()` then `detach()`, repeated (up to three rounds) while that still reduces what is unsynced. */
  syncThenDetach(opts?: OpOptions): Promise<SyncThenDetachResult>;
  /** Uploads the local changes (a frozen push first), as bundles. */
  pushPending(opts?: OpOptions): Promise<PushReport>;
  /** Downloads and applies the server's bundles up to its stable point (a snapshot rebuild when history was pruned). */
  pullToStable(opts?: OpOptions): Promise<PullReport>;
  /** `pushPending()`, then `pullToStable()`. */
  sync(opts?: OpOptions): Promise<SyncReport>;
  /** Rebuilds the local state from a server snapshot, keeping unpushed intents; rotates the source id in source recovery. */
  rebuild(opts?: OpOptions): Promise<RebuildReport>;
  /**
   * The live sync state (connected, uploading, downloading, pending changes, last push and pull,
   * last error): one object for the client's lifetime, updated in place; each change also emits a
   * `status` event with it. See {@link ClientStatus}.
   */
  readonly status: ClientStatus;
  /**
   * Where the client stands, as stored in the database: authority, pending rows, last bundle seen,
   * identity, recovery flags (a read; `status` is the live view).
   */
  readStatus(opts?: OpOptions): Promise<SyncStatus>;
  /** What is not yet on the server, and whether it blocks `detach()`. */
  pendingStatus(opts?: OpOptions): Promise<PendingStatus>;
  /**
   * The device's conflict log, oldest first: every conflict resolved on this device, with both
   * versions, the resolution applied and whether the local intent was lost. Entries are written in
   * the transaction that applied their plan, so they survive crashes; `detach()` clears them with
   * the user's data. Does not contend with a running sync.
   */
  conflicts(opts?: OpOptions & ConflictQuery): Promise<ConflictRecord[]>;
  /** Starts the background uploader and downloader (watch-driven when enabled). */
  start(opts?: OpOptions): void;
  /** Stops the background loops started by `start()` and waits for them. */
  stop(): Promise<void>;
  /**
   * Runs `fn` as one write transaction (BEGIN IMMEDIATE … COMMIT) on the client's writer and
   * resolves with its result. While a large hydrate or push holds SQLite's write lock (on the
   * client's apply connection, see "Staying responsive on big hydrates and pushes" in the README), the write
   * waits for that apply to end instead of failing with `SQLITE_BUSY`, and the event loop keeps
   * running meanwhile. Through a write coordinator it is a coordinator job. `fn` must be
   * synchronous; the background uploader is woken after COMMIT.
   */
  writeTransaction<T>(fn: (db: SqliteDb) => T, opts?: OpOptions): Promise<T>;
  /**
   * Tells the client the app wrote: wakes the background uploader, recounts `status.pendingChanges`
   * and re-runs the live queries that read `tables` (every live query when `tables` is omitted).
   * Writes on the client's own connection (the database or the coordinator given as `writer`) are
   * noticed without it; call it after writes made on another connection to the same file.
   */
  notifyLocalChange(tables?: readonly string[]): void;
  /**
   * A live query: the rows of the read-only statement `sql` (bound to `params`) now, and again
   * after every change to a table it reads (found by SQLite from the statement's program: views
   * and joins included), whether a local write, a pulled bundle, a push written back, a snapshot
   * or a conflict resolution. Changes within `throttleMs` are served by one re-run, and a result
   * equal to the previous one is not yielded. A slow consumer gets the newest result, not a
   * backlog. Each `for await` runs its own query; it ends when the loop breaks (`return()`), the
   * `signal` aborts, or the client closes, and throws when the statement is not a read-only query
   * or a read fails.
   */
  watch<R = Record<string, unknown>>(
    sql: string,
    params?: WatchParams,
    options?: WatchOptions,
  ): AsyncIterable<R[]>;
  /**
   * The callback form of `watch()`: `onResult` gets each result, `onError` the error that ended
   * the watch. Returns the function that ends it (as do `signal` and `close()`).
   */
  watch<R = Record<string, unknown>>(
    sql: string,
    params: WatchParams | undefined,
    options: WatchOptions & WatchHandlers<R>,
  ): () => void;
  /** Until `resumeUploads()`, pushes (`pushPending()`, the push half of `sync()`, the background uploader) answer `skipped_paused`. */
  pauseUploads(): void;
  /** Ends `pauseUploads()`. */
  resumeUploads(): void;
  /** Until `resumeDownloads()`, pulls and rebuilds (explicit and background) answer `skipped_paused`. */
  pauseDownloads(): void;
  /** Ends `pauseDownloads()`. */
  resumeDownloads(): void;
  /** Calls `listener` on every `event` until the returned function is called. */
  on<E extends keyof ClientEvents>(event: E, listener: (e: ClientEvents[E]) => void): () => void;
  /** Counters since creation. */
  metrics(): ClientMetrics;
  /**
   * Every `applied` event (server data written locally) as an async iterable, e.g. to refresh a
   * UI; ends when the signal aborts or the client closes. Slow consumers get the newest events
   * (the buffer keeps the last `bufferSize`, default 256).
   */
  changes(opts?: { signal?: AbortSignal; bufferSize?: number }): AsyncIterable<AppliedEvent>;
  /** Drops the triggers and metadata tables; business data stays. Closes the client. */
  uninstall(opts?: OpOptions): Promise<void>;
  /**
   * Stops the background loops, waits for the running operation, releases the database (one client
   * per database file per process) and emits `closed`. Does not close the database. Idempotent.
   */
  close(): Promise<void>;
  /** `close()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}
