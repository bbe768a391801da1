/**
 * What a full change stream does with one more event:
 * - `'drop-oldest'`: the oldest buffered event is discarded (given to `onDrop`), the new one kept;
 * - `'drop-newest'`: the new event is discarded (given to `onDrop`);
 * - `'error'`: the stream fails with `overflowError(...)` and its consumer's next read rejects;
 * - a function: returns the new buffer from the full one and the incoming event (to replace what
 *   the consumer missed by one "gap" event, say); it must not return more than `capacity` events.
 */
export type OverflowPolicy<T> =
  | 'drop-oldest'
  | 'drop-newest'
  | 'error'
  | ((buffered: readonly T[], incoming: T) => T[]);

/**
 * The options of a {@link ChangeStream}: its bound (`capacity`), what it does when a slow consumer
 * lets the buffer fill up (`overflow`), and the hooks for cancelling, dropped events and closing.
 */
export interface ChangeStreamOptions<T> {
  /** Events buffered for a consumer that is not reading, at most. A positive integer. */
  capacity: number;
  /** What a push into a full buffer does (see {@link OverflowPolicy}). */
  overflow: OverflowPolicy<T>;
  /** Aborting it fails the stream with `signal.reason`. */
  signal?: AbortSignal | undefined;
  /** With `overflow: 'error'`: the error to fail with (default: a plain Error naming the capacity). */
  overflowError?: ((capacity: number, buffered: readonly T[]) => unknown) | undefined;
  /** With a drop policy: receives each event dropped. */
  onDrop?: ((dropped: T) => void) | undefined;
  /** Called once when the stream is done (ended, failed, aborted or returned): unregister it here. */
  onClose?: (() => void) | undefined;
}

/**
 * A bounded buffer between a producer (`push`, `end`, `fail`) and one consumer reading it as an
 * async iterator (`for await`). Memory is bounded by `capacity` whatever the consumer does.
 *
 * - `end()`: buffered events are still delivered, then the iteration finishes.
 * - `fail(error)` and an abort of `signal`: buffered events are discarded; the pending and every
 *   later `next()` reject with the error (`signal.reason` for an abort).
 * - `return()` (a `break` out of `for await`), `close()` and `[Symbol.asyncDispose]`: the consumer
 *   leaves; buffered events are discarded and the iteration is done.
 * Pushes after the stream is done are ignored.
 *
 * @example
 * ```ts
 * import { ChangeStream } from '@x/core';
 *
 * const stream = new ChangeStream<number>({ capacity: 2, overflow: 'drop-oldest' });
 * stream.push(1);
 * stream.push(2);
 * stream.push(3); // the buffer is full: 1 is dropped
 * stream.end();
 * for await (const n of stream) console.log(n); // 2, then 3
 * ```
 */
export class ChangeStream<T> implements AsyncIterableIterator<T>, AsyncDisposable {
  readonly #capacity: number;
  readonly #overflow: OverflowPolicy<T>;
  readonly #options: ChangeStreamOptions<T>;
  #buffer: T[] = [];
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | null = null;
  #ended = false;
  #failed = false;
  #error: unknown = undefined;
  #closed = false;
  readonly #onAbort = (): void => this.fail(this.#options.signal?.reason);

  constructor(options: ChangeStreamOptions<T>) {
    if (!Number.isInteger(options.capacity) || options.capacity <= 0) {
      throw new RangeError(`a change stream needs a positive integer capacity, got ${options.capacity}`);
    }
    this.#capacity = options.capacity;
    this.#overflow = options.overflow;
    this.#options = options;
    const { signal } = options;
    if (signal?.aborted) this.fail(signal.reason);
    else signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** True once ended, failed, aborted or returned: no more events are accepted. */
  get done(): boolean {
    return this.#ended || this.#failed;
  }

  /** Events waiting for the consumer. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Hands `event` to the consumer (or buffers it); applies the overflow policy when full. */
  push(event: T): void {
    if (this.done) return;
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: event, done: false });
      return;
    }
    if (this.#buffer.length < this.#capacity) {
      this.#buffer.push(event);
      return;
    }
    const policy = this.#overflow;
    if (policy === 'drop-oldest') {
      const dropped = this.#buffer.shift() as T;
      this.#buffer.push(event);
      this.#options.onDrop?.(dropped);
    } else if (policy === 'drop-newest') {
      this.#options.onDrop?.(event);
    } else if (policy === 'error') {
      const make = this.#options.overflowError;
      this.fail(
        make !== undefined
          ? make(this.#capacity, this.#buffer)
          : new Error(`change stream overflow: the consumer fell more than ${this.#capacity} events behind`),
      );
    } else {
      this.#buffer = policy(this.#buffer, event);
    }
  }

  /** The producer is done: buffered events are still delivered, then the iteration finishes. */
  end(): void {
    if (this.done) return;
    this.#ended = true;
    this.#close();
    if (this.#waiter !== null && this.#buffer.length === 0) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  /** Fails the stream: buffered events are dropped and reads reject with `error`. */
  fail(error: unknown): void {
    if (this.done) return;
    this.#failed = true;
    this.#error = error;
    this.#buffer = [];
    this.#close();
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      w.reject(error);
    }
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#options.signal?.removeEventListener('abort', this.#onAbort);
    this.#options.onClose?.();
  }

  /**
   * The next event: a buffered one at once, else the next one pushed. Resolves `done` once the
   * stream ended and its buffer is empty (or the consumer left); rejects with the error of a failed
   * or aborted stream.
   */
  next(): Promise<IteratorResult<T>> {
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#buffer.length > 0) return Promise.resolve({ value: this.#buffer.shift() as T, done: false });
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** The consumer leaves: buffered events are discarded and the iteration is done. */
  return(): Promise<IteratorResult<T>> {
    this.#buffer = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Same as `return()`. */
  async close(): Promise<void> {
    await this.return();
  }

  /** Same as `return()`: `await using stream = ...` leaves the stream at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.return();
  }

  /** The stream itself: it is read once, by one consumer. */
  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
