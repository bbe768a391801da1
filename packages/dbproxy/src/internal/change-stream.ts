import type { ChangeEvent } from '../types.js';

/**
 * A bounded async iterator of change events. When its consumer falls more than `bufferSize` events
 * behind, the buffered writes are replaced by one gap event rather than growing without bound.
 */
export class ChangeStream implements AsyncIterableIterator<ChangeEvent> {
  #buf: ChangeEvent[] = [];
  #waiter: ((r: IteratorResult<ChangeEvent>) => void) | null = null;
  #failer: ((e: unknown) => void) | null = null;
  #ended = false;
  #error: unknown = undefined;
  readonly #bufferSize: number;
  readonly #onEnd: () => void;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.fail(this.#signal?.reason);

  constructor(bufferSize: number, onEnd: () => void, signal?: AbortSignal) {
    this.#bufferSize = bufferSize;
    this.#onEnd = onEnd;
    this.#signal = signal;
    if (signal?.aborted) this.#error = signal.reason;
    signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  push(e: ChangeEvent): void {
    if (this.#ended || this.#error !== undefined) return;
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      this.#failer = null;
      w({ value: e, done: false });
      return;
    }
    if (this.#buf.length >= this.#bufferSize) {
      const first = this.#buf[0]!;
      const afterSeq = first.type === 'write' ? first.seq - 1 : first.afterSeq;
      const toSeq = e.type === 'write' ? e.seq : e.toSeq;
      this.#buf = [{ type: 'gap', afterSeq, toSeq }];
      return;
    }
    this.#buf.push(e);
  }

  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#cleanup();
    if (this.#waiter !== null && this.#buf.length === 0) {
      const w = this.#waiter;
      this.#waiter = null;
      w({ value: undefined, done: true });
    }
  }

  fail(e: unknown): void {
    if (this.#ended || this.#error !== undefined) return;
    this.#error = e;
    this.#cleanup();
    if (this.#failer !== null) {
      const f = this.#failer;
      this.#waiter = null;
      this.#failer = null;
      f(e);
    }
  }

  #cleanup(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#onEnd();
  }

  next(): Promise<IteratorResult<ChangeEvent>> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const e = this.#buf.shift();
    if (e !== undefined) return Promise.resolve({ value: e, done: false });
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#failer = reject;
    });
  }

  return(): Promise<IteratorResult<ChangeEvent>> {
    this.#buf = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<ChangeEvent> {
    return this;
  }
}
