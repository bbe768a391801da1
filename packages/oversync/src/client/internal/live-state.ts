/**
 * What the facade keeps live (issue #20): `client.status` (through a StatusTracker) and the change
 * notices of its live queries. The facade reports what happens: HTTP answers (through the fetch
 * wrapped here), operations starting and ending, `applied` events, `open()`, close. This file turns
 * them into status fields and into notices for the live queries, and owns the write hook of the
 * writer's connection (write-hook.ts): TEMP triggers on the tables the live queries read, and on
 * `_sync_dirty_rows`/`_sync_outbox_rows` for `status.pendingChanges`. Also the stream of
 * `client.changes()`.
 */
import { ChangeStream, type Emitter, type Logger } from '@x/core';
import { ClientError } from '../errors.js';
import type { FetchLike } from '../transport-types.js';
import type { AppliedEvent, ClientEvents, ClientStatus, StatusError } from '../types.js';
import type { SyncWriter } from '../writer-types.js';
import type { LiveSource, TableSet } from './live-query.js';
import { readPending } from './local-store.js';
import { StatusTracker } from './status.js';
import { WriteHook } from './write-hook.js';
import { isCoordinator, type TxRunner } from './writer.js';

/** The client's tables whose writes change `status.pendingChanges`. */
const PENDING_TABLES = ['_sync_dirty_rows', '_sync_outbox_rows'];
/** Answers of a proxy in front of the server that say the server is not reachable. */
const UNREACHABLE_STATUSES = new Set([502, 503, 504]);

/** What the live state needs from the facade. */
export interface LiveHost {
  readonly runner: TxRunner;
  readonly writer: SyncWriter;
  readonly logger: Logger;
  /** Attached in this process (and not closed). */
  attached(): boolean;
  /** Emits the `status` event. */
  emitStatus(s: ClientStatus): void;
}

export class LiveState {
  readonly #host: LiveHost;
  readonly #tracker: StatusTracker;
  /** The server answered the last request. */
  #reachable = false;
  #opened = false;
  #closed = false;
  /** Live queries' change listeners and their end callbacks. */
  readonly #watchers = new Map<(tables: TableSet) => void, () => void>();
  #hook: { db: unknown; hook: WriteHook; off: () => void; untrack: () => void } | undefined;
  #commitFeedOff: (() => void) | undefined;
  #pendingTimer: ReturnType<typeof setTimeout> | undefined;
  #pendingReading = false;

  constructor(host: LiveHost) {
    this.#host = host;
    this.#tracker = new StatusTracker((s) => host.emitStatus(s));
  }

  get status(): ClientStatus {
    return this.#tracker.status;
  }

  /** Sets status fields (one `status` event when any changed). */
  set(patch: Partial<ClientStatus>): void {
    this.#tracker.set(patch);
  }

  /** Records a failure as `lastError`. */
  failed(error: unknown, operation: StatusError['operation']): void {
    this.#tracker.failed(error, operation);
  }

  /** Runs a push (`uploading`) or a pull (`downloading`), recording its success. */
  async during<T>(kind: 'push' | 'pull', fn: () => Promise<T>): Promise<T> {
    const flag = (on: boolean) => (kind === 'push' ? { uploading: on } : { downloading: on });
    this.set(flag(true));
    try {
      const r = await fn();
      this.#tracker.succeeded(kind);
      return r;
    } finally {
      // a push: the count first, so that `uploading` ends on the state the push left
      if (kind === 'push') await this.countPending();
      this.set(flag(false));
    }
  }

  /** Runs an attach: `downloading` while its snapshot (if any) runs, a pull when it hydrated. */
  async attaching<T extends { outcome?: string }>(fn: () => Promise<T>): Promise<T> {
    try {
      const r = await fn();
      if (r.outcome === 'used_remote_state') this.#tracker.succeeded('pull');
      return r;
    } finally {
      this.set({ downloading: false });
    }
  }

  /** The client's fetch, reporting every answer (or its absence) as `status.connected`. */
  wrapFetch(fetch: FetchLike): FetchLike {
    return (url, init) =>
      fetch(url, init).then(
        (res) => {
          this.#reachable = !UNREACHABLE_STATUSES.has(res.status);
          this.refreshConnected();
          return res;
        },
        (error: unknown) => {
          if (!init.signal?.aborted) {
            this.#reachable = false;
            this.refreshConnected();
          }
          throw error;
        },
      );
  }

  refreshConnected(): void {
    this.set({ connected: !this.#closed && this.#host.attached() && this.#reachable });
  }

  /**
   * Recounts `status.pendingChanges` soon (once per burst of writes: the timer runs after the
   * synchronous work that wrote). Only after `open()`: before it the client's tables may not exist.
   */
  schedulePendingCount(): void {
    if (this.#pendingTimer !== undefined || this.#closed || !this.#opened) return;
    this.#pendingTimer = setTimeout(() => {
      this.#pendingTimer = undefined;
      if (this.#pendingReading) this.schedulePendingCount();
      else void this.countPending();
    }, 0);
  }

  /** Reads the pending count into `status.pendingChanges` now (never rejects). */
  async countPending(): Promise<void> {
    if (this.#closed || !this.#opened) return;
    this.#pendingReading = true;
    try {
      const p = await this.#host.runner.read((db) => readPending(db));
      if (!this.#closed) this.set({ pendingChanges: p.dirtyRows + p.outboxRows });
    } catch (err) {
      this.#host.logger.debug({ err }, 'oversync client: pending count failed');
    } finally {
      this.#pendingReading = false;
    }
  }

  /** Tells the live queries that `tables` (undefined: any table) may have changed. */
  notify(tables: TableSet): void {
    for (const change of this.#watchers.keys()) change(tables);
  }

  /** `notifyLocalChange(tables?)`: the app wrote (to `tables`, or to anything). */
  localChange(tables: readonly string[] | undefined): void {
    this.notify(tables ? new Set(tables.map((t) => t.toLowerCase())) : undefined);
    this.schedulePendingCount();
  }

  /** Server data was written (an `applied` event). */
  applied(tables: readonly string[]): void {
    this.notify(new Set(tables.map((t) => t.toLowerCase())));
    this.schedulePendingCount();
  }

  /**
   * The write hook of the writer's connection, made on first need and again when the connection
   * changed (a dbproxy process that became the primary anew). Undefined when the connection is out
   * of reach or cannot host it: then a coordinator's commit feed (when it has one) stands in,
   * telling of every commit but not of its tables.
   */
  #writeHook(): WriteHook | undefined {
    let db: unknown;
    try {
      db = this.#host.runner.db;
    } catch {
      db = undefined;
    }
    if (this.#hook && this.#hook.db === db) return this.#hook.hook;
    this.#dropHook();
    const hook = db === undefined ? undefined : WriteHook.of(db as never);
    if (!hook) {
      const w = this.#host.writer as { subscribe?: unknown };
      if (!this.#commitFeedOff && isCoordinator(w) && typeof w.subscribe === 'function') {
        this.#commitFeedOff = (w.subscribe as (l: () => void) => () => void)(() => {
          this.notify(undefined);
          this.schedulePendingCount();
        });
      }
      return undefined;
    }
    const off = hook.on((tables) => {
      if (PENDING_TABLES.some((t) => tables.has(t))) this.schedulePendingCount();
      this.notify(tables);
    });
    const untrack = this.#opened ? hook.track(PENDING_TABLES) : () => {};
    this.#hook = { db, hook, off, untrack };
    return hook;
  }

  #dropHook(): void {
    const h = this.#hook;
    this.#hook = undefined;
    h?.off();
    h?.untrack();
    this.#commitFeedOff?.();
    this.#commitFeedOff = undefined;
  }

  /** After `open()`: the pending count follows the client's dirty and outbox rows. */
  opened(): void {
    this.#opened = true;
    const h = this.#hook;
    if (h) {
      h.untrack();
      h.untrack = h.hook.track(PENDING_TABLES);
    } else this.#writeHook();
    this.schedulePendingCount();
  }

  /** Where a live query of the client reads and hears of changes (an error once closed). */
  source(): LiveSource | ClientError {
    if (this.#closed) return new ClientError('OVERSYNC_CLIENT_CLOSED', 'watch: client is closed');
    const hook = this.#writeHook();
    const source: LiveSource = {
      read: (fn, signal) => this.#host.runner.read(fn, signal),
      subscribe: (change, end) => {
        this.#watchers.set(change, end);
        return () => this.#watchers.delete(change);
      },
    };
    if (hook) source.track = (tables) => hook.track(tables);
    return source;
  }

  /** The client closed: live queries end (each releases its triggers), then the client's own go. */
  close(): void {
    this.#closed = true;
    if (this.#pendingTimer !== undefined) clearTimeout(this.#pendingTimer);
    this.#pendingTimer = undefined;
    for (const end of [...this.#watchers.values()]) end();
    this.#watchers.clear();
    this.#dropHook();
    this.set({ connected: false, uploading: false, downloading: false });
  }
}

/** Events a `changes()` iterator holds for a consumer that is not reading (default). */
const DEFAULT_CHANGES_BUFFER_SIZE = 256;

/** `client.changes()`: the `applied` events of `events` as an async iterable. */
export function appliedEvents(
  events: Emitter<ClientEvents>,
  closed: () => boolean,
  opts: { signal?: AbortSignal; bufferSize?: number },
): AsyncIterable<AppliedEvent> {
  const capacity = opts.bufferSize ?? DEFAULT_CHANGES_BUFFER_SIZE;
  if (!Number.isInteger(capacity) || capacity < 1) {
    throw new ClientError(
      'OVERSYNC_CLIENT_INVALID_OPTIONS',
      `changes: bufferSize must be a positive integer, got ${capacity}`,
    );
  }
  const { signal } = opts;
  return {
    // Each iteration subscribes when it starts; a slow consumer loses the oldest events, and the
    // iteration ends (after the buffered events) when the signal aborts or the client closes.
    [Symbol.asyncIterator]: () => {
      const unsubscribe: Array<() => void> = [];
      const end = (): void => stream.end();
      const stream = new ChangeStream<AppliedEvent>({
        capacity,
        overflow: 'drop-oldest',
        onClose: () => {
          for (const off of unsubscribe) off();
          signal?.removeEventListener('abort', end);
        },
      });
      if (closed() || signal?.aborted) {
        stream.end();
        return stream;
      }
      unsubscribe.push(
        events.on('applied', (e) => stream.push(e)),
        events.on('closed', end),
      );
      signal?.addEventListener('abort', end, { once: true });
      return stream;
    },
  };
}
