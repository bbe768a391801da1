/**
 * Background sync: the uploader (pushes dirty rows every `uploadIntervalMs`, or at once when
 * woken by the app or by a coordinator commit) and the downloader (pulls, then holds the server's
 * watch stream open and pulls on each bundle event, or polls every `watch.fallbackIntervalMs`).
 * Both back off on errors and report them as `error` events. Every push and pull goes through the
 * host (the facade's queue), so it runs one at a time with the public operations.
 */
import { sleep } from '@x/core';
import { bundleChangeEventSchema } from '../../shared/wire.js';
import { isClientError, isLifecyclePreconditionError } from '../errors.js';
import type { SyncClientOptions } from '../options.js';
import { readAttachment } from './local-store.js';
import type { Remote } from './remote.js';
import { parseSse } from './sse.js';
import { isCoordinator, type TxRunner } from './writer.js';

/** What the loops need from the client. */
export interface BackgroundHost {
  /** Attached in this process and uploads not paused. */
  canUpload(): boolean;
  /** Attached in this process and downloads not paused. */
  canDownload(): boolean;
  closed(): boolean;
  /** Queued: one push when there are dirty or frozen rows. */
  pushIfPending(signal: AbortSignal): Promise<void>;
  /** Queued: one pull to the stable bundle. */
  pull(signal: AbortSignal): Promise<unknown>;
  error(error: unknown, loop: 'upload' | 'download'): void;
}

type LoopOptions = Pick<
  SyncClientOptions,
  'backoffMinMs' | 'backoffMaxMs' | 'uploadIntervalMs' | 'watch' | 'writer'
>;

export class BackgroundSync {
  readonly #host: BackgroundHost;
  readonly #options: LoopOptions;
  readonly #runner: TxRunner;
  readonly #remote: Remote;
  readonly #ac = new AbortController();
  readonly #done: Promise<void>;
  #unsubscribeChanges: (() => void) | undefined;
  #wake: () => void = () => undefined;
  #pendingWake = false;

  /** Starts both loops; `signal` aborting stops them like `stop()`. */
  constructor(
    host: BackgroundHost,
    options: LoopOptions,
    runner: TxRunner,
    remote: Remote,
    signal?: AbortSignal,
  ) {
    this.#host = host;
    this.#options = options;
    this.#runner = runner;
    this.#remote = remote;
    const ac = this.#ac;
    signal?.addEventListener('abort', () => ac.abort(signal?.reason), { once: true });
    const writer = options.writer;
    if (isCoordinator(writer) && typeof (writer as { subscribe?: unknown }).subscribe === 'function') {
      this.#unsubscribeChanges = (writer as unknown as { subscribe(l: () => void): () => void }).subscribe(
        () => {
          // Commits of the client's own transactions are not app changes (and would wake it forever).
          if (!runner.busy) this.wakeUpload();
        },
      );
    }
    this.#done = Promise.all([this.#uploadLoop(ac.signal), this.#downloadLoop(ac.signal)]).then(
      () => undefined,
    );
  }

  /** Runs the uploader now instead of at its next interval. */
  wakeUpload(): void {
    this.#pendingWake = true;
    this.#wake();
  }

  /** Stops both loops with `reason` and waits for them to end. */
  async stop(reason: unknown): Promise<void> {
    this.#unsubscribeChanges?.();
    this.#unsubscribeChanges = undefined;
    this.#ac.abort(reason);
    await this.#done.catch(() => undefined);
  }

  /** Waits `ms`, or less when woken or stopped. */
  async #waitUpload(ms: number): Promise<void> {
    if (this.#pendingWake) {
      this.#pendingWake = false;
      return;
    }
    try {
      await sleep(ms, {
        signal: this.#ac.signal,
        wake: (wakeUp) => {
          this.#wake = wakeUp;
          return () => {
            this.#wake = () => undefined;
          };
        },
      });
    } catch {
      // stopped: the loop checks its signal
    } finally {
      this.#pendingWake = false;
    }
  }

  /** Reports a loop's error; returns the next wait: the minimum after a precondition error, else doubled. */
  #failed(error: unknown, loop: 'upload' | 'download', backoff: number): number {
    this.#host.error(error, loop);
    const o = this.#options;
    return isLifecyclePreconditionError(error) ? o.backoffMinMs : Math.min(backoff * 2, o.backoffMaxMs);
  }

  async #uploadLoop(signal: AbortSignal): Promise<void> {
    const o = this.#options;
    let backoff = o.backoffMinMs;
    while (!signal.aborted) {
      try {
        if (this.#host.canUpload()) await this.#host.pushIfPending(signal);
        backoff = o.backoffMinMs;
        await this.#waitUpload(o.uploadIntervalMs);
      } catch (error) {
        if (signal.aborted || this.#host.closed()) return;
        backoff = this.#failed(error, 'upload', backoff);
        await this.#waitUpload(backoff);
      }
    }
  }

  async #downloadLoop(signal: AbortSignal): Promise<void> {
    const o = this.#options;
    let backoff = o.backoffMinMs;
    let watchAllowed = o.watch.mode === 'auto';
    while (!signal.aborted) {
      try {
        if (!this.#host.canDownload()) {
          await sleep(o.backoffMinMs, { signal });
          continue;
        }
        await this.#pullIfPossible(signal);
        if (watchAllowed) {
          const caps = await this.#remote.capabilities(signal);
          if (caps.features.bundle_change_watch) {
            const outcome = await this.#watch(signal);
            if (outcome === 'forbidden') watchAllowed = false;
            backoff = o.backoffMinMs;
            continue;
          }
          watchAllowed = false;
        }
        backoff = o.backoffMinMs;
        await sleep(o.watch.fallbackIntervalMs, { signal });
      } catch (error) {
        if (signal.aborted || this.#host.closed()) return;
        backoff = this.#failed(error, 'download', backoff);
        try {
          await sleep(backoff, { signal });
        } catch {
          return;
        }
      }
    }
  }

  /** A pull, unless a frozen push must be replayed first: then the uploader is woken instead. */
  async #pullIfPossible(signal: AbortSignal): Promise<void> {
    try {
      await this.#host.pull(signal);
    } catch (e) {
      if (isClientError(e, 'OVERSYNC_CLIENT_PENDING_PUSH_REPLAY')) {
        this.wakeUpload();
        return;
      }
      throw e;
    }
  }

  /** Holds the watch stream open; each bundle event triggers a pull. Fallback polls keep running. */
  async #watch(signal: AbortSignal): Promise<'ended' | 'forbidden'> {
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    const fallback = setInterval(() => {
      this.#pullIfPossible(ac.signal).catch((error) => {
        if (!ac.signal.aborted) this.#host.error(error, 'download');
      });
    }, this.#options.watch.fallbackIntervalMs);
    try {
      const after = await this.#runner.read((db) => readAttachment(db).lastBundleSeqSeen, signal);
      const body = await this.#remote.watch(after, ac.signal);
      if (body === 'forbidden') return 'forbidden';
      let pulling: Promise<void> | undefined;
      let again = false;
      const trigger = () => {
        if (pulling) {
          again = true;
          return;
        }
        pulling = (async () => {
          do {
            again = false;
            await this.#pullIfPossible(ac.signal);
          } while (again && !ac.signal.aborted);
        })()
          .catch((error) => {
            if (!ac.signal.aborted) this.#host.error(error, 'download');
          })
          .finally(() => {
            pulling = undefined;
          });
      };
      for await (const ev of parseSse(body, ac.signal)) {
        if (ev.event !== 'bundle') continue;
        let parsed: unknown;
        try {
          parsed = JSON.parse(ev.data);
        } catch {
          continue;
        }
        const e = bundleChangeEventSchema.safeParse(parsed);
        if (!e.success || e.data.bundle_seq <= 0) continue;
        trigger();
      }
      await pulling;
      return 'ended';
    } finally {
      clearInterval(fallback);
      signal.removeEventListener('abort', onAbort);
      ac.abort();
    }
  }
}
