/** Small async helpers shared by the proxy's loops. */

/** The part of AbortSignal the helpers below use; `LightSignal` implements it without EventTarget. */
export interface SignalLike {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * A cheap one-shot cancellation for the write hot path (an AbortController is an EventTarget and
 * costs several microseconds per write). `toAbortSignal()` makes a real one only when needed.
 */
export class LightSignal implements SignalLike {
  aborted = false;
  reason: unknown = undefined;
  #listeners: Array<() => void> = [];
  #controller: AbortController | null = null;

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const ls = this.#listeners;
    this.#listeners = [];
    for (const l of ls) l();
    this.#controller?.abort(reason);
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    this.#listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const i = this.#listeners.indexOf(listener);
    if (i >= 0) this.#listeners.splice(i, 1);
  }

  toAbortSignal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.aborted) this.#controller.abort(this.reason);
    }
    return this.#controller.signal;
  }
}

interface DeadlineEntry {
  at: number;
  fire: () => void;
  done: boolean;
}

/**
 * Deadlines without a timer per write: entries with the same timeout expire in insertion order, so
 * each timeout value keeps a FIFO and a single (unref'd) timer for its head. Cancelling marks an
 * entry done; done entries are dropped when they reach the head.
 */
export class DeadlineQueue {
  #lanes = new Map<number, { items: DeadlineEntry[]; head: number; timer: NodeJS.Timeout | null }>();

  add(timeoutMs: number, fire: () => void): { cancel(): void } {
    let lane = this.#lanes.get(timeoutMs);
    if (lane === undefined) {
      lane = { items: [], head: 0, timer: null };
      this.#lanes.set(timeoutMs, lane);
    }
    const entry: DeadlineEntry = { at: performance.now() + timeoutMs, fire, done: false };
    lane.items.push(entry);
    if (lane.timer === null) this.#arm(timeoutMs);
    return {
      cancel() {
        entry.done = true;
      },
    };
  }

  #arm(timeoutMs: number): void {
    const lane = this.#lanes.get(timeoutMs);
    if (lane === undefined) return;
    while (lane.head < lane.items.length && lane.items[lane.head]!.done) lane.head++;
    if (lane.head >= lane.items.length) {
      this.#lanes.delete(timeoutMs);
      return;
    }
    if (lane.head > 1024 && lane.head * 2 > lane.items.length) {
      lane.items = lane.items.slice(lane.head);
      lane.head = 0;
    }
    const wait = Math.max(0, lane.items[lane.head]!.at - performance.now());
    lane.timer = setTimeout(() => {
      lane.timer = null;
      const now = performance.now();
      while (lane.head < lane.items.length && lane.items[lane.head]!.at <= now) {
        const e = lane.items[lane.head++]!;
        if (!e.done) {
          e.done = true;
          e.fire();
        }
      }
      this.#arm(timeoutMs);
    }, wait + 1);
    lane.timer.unref();
  }
}

/** Throws `signal.reason` if aborted. */
export function throwIfAborted(signal: SignalLike | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/**
 * Waits `ms` (or until `signal` aborts, rejecting with its reason). Resolves early, with `false`,
 * when `wake` fires; with `true` when the full time passed.
 */
export function sleep(ms: number, signal?: SignalLike, wake?: Notifier): Promise<boolean> {
  return new Promise<boolean>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let off: (() => void) | undefined;
    const done = (v: boolean): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      off?.();
      resolve(v);
    };
    const onAbort = (): void => {
      clearTimeout(timer);
      off?.();
      reject(signal?.reason);
    };
    const timer = setTimeout(() => done(true), Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (wake !== undefined) off = wake.once(() => done(false));
  });
}

/** A level-free "something changed" signal: waiters registered before `notify()` are woken. */
export class Notifier {
  #listeners = new Set<() => void>();

  once(fn: () => void): () => void {
    const wrapped = (): void => {
      this.#listeners.delete(wrapped);
      fn();
    };
    this.#listeners.add(wrapped);
    return () => this.#listeners.delete(wrapped);
  }

  notify(): void {
    const ls = [...this.#listeners];
    this.#listeners.clear();
    for (const l of ls) l();
  }
}

/** A bounded sample of recent values for p50/p99. */
export class Reservoir {
  #buf: number[] = [];
  #next = 0;
  constructor(readonly size: number) {}

  record(v: number): void {
    if (this.#buf.length < this.size) this.#buf.push(v);
    else {
      this.#buf[this.#next] = v;
      this.#next = (this.#next + 1) % this.size;
    }
  }

  percentile(p: number): number {
    if (this.#buf.length === 0) return 0;
    const sorted = [...this.#buf].sort((a, b) => a - b);
    const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[idx]!;
  }
}

/**
 * Serialises sends on one ZeroMQ socket (zeromq.js allows a single pending send) and coalesces
 * everything queued while a send was pending into one frame per destination.
 */
export class CoalescingSender<T> {
  #queue: Array<{ to: string; item: T }> = [];
  #running = false;

  constructor(
    private readonly sendFrame: (to: string, items: T[]) => Promise<void>,
    private readonly onError: (e: unknown) => void,
  ) {}

  push(to: string, item: T): void {
    this.#queue.push({ to, item });
    if (!this.#running) {
      // Start on the next check phase: everything queued by the current batch of callbacks and
      // their promise continuations (say, the follow-up writes of 200 answered ones) goes out as
      // one frame per destination instead of 200.
      this.#running = true;
      setImmediate(this.#kick);
    }
  }

  readonly #kick = (): void => {
    void this.#drain();
  };

  get queued(): number {
    return this.#queue.length;
  }

  /** True while frames are queued or a send is pending. */
  get busy(): boolean {
    return this.#running || this.#queue.length > 0;
  }

  clear(): void {
    this.#queue = [];
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        const byDest = new Map<string, T[]>();
        for (const { to, item } of batch) {
          const list = byDest.get(to);
          if (list === undefined) byDest.set(to, [item]);
          else list.push(item);
        }
        for (const [to, items] of byDest) {
          try {
            await this.sendFrame(to, items);
          } catch (e) {
            this.onError(e);
          }
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

/**
 * One JSON frame for items coalesced into one send: a single item alone, several as an array. Each
 * item is encoded on its own, so one that JSON cannot carry is handed to `onUnencodable` (which may
 * return a replacement, or null to leave it out) and never costs the others their frame.
 */
export function encodeFrame<T>(
  items: readonly T[],
  onUnencodable: (item: T, e: unknown) => string | null,
): string | null {
  const parts: string[] = [];
  for (const item of items) {
    let json: string | null;
    try {
      json = JSON.stringify(item);
    } catch (e) {
      json = onUnencodable(item, e);
    }
    if (json !== null) parts.push(json);
  }
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : `[${parts.join(',')}]`;
}
