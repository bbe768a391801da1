/** The public interface of the sync client (`createSyncClient` in client.ts returns one). */
import type { SyncClientOptions } from './options.js';
import type {
  AppliedEvent,
  AttachResult,
  ClientEvents,
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
} from './types.js';

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
  open(opts?: OpOptions): Promise<void>;
  attach(userId: string, opts?: OpOptions): Promise<AttachResult>;
  detach(opts?: OpOptions & { force?: boolean }): Promise<DetachResult>;
  syncThenDetach(opts?: OpOptions): Promise<SyncThenDetachResult>;
  pushPending(opts?: OpOptions): Promise<PushReport>;
  pullToStable(opts?: OpOptions): Promise<PullReport>;
  sync(opts?: OpOptions): Promise<SyncReport>;
  rebuild(opts?: OpOptions): Promise<RebuildReport>;
  status(opts?: OpOptions): Promise<SyncStatus>;
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
  stop(): Promise<void>;
  /** Wakes the background uploader now (e.g. after an app write). */
  notifyLocalChange(): void;
  pauseUploads(): void;
  resumeUploads(): void;
  pauseDownloads(): void;
  resumeDownloads(): void;
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
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
