import { WriteCoordinatorError } from '../errors.js';
import type { CommitEvent } from '../types.js';

/**
 * One `changes()` consumer: a bounded buffer between the writer loop (push) and an async iterator
 * (next). A consumer that falls more than `capacity` events behind fails with CHANGES_OVERFLOW
 * rather than letting the buffer grow without bound; `seq` lets it resynchronise.
 */
export class ChangeStream implements AsyncIterableIterator<CommitEvent> {
  readonly #capacity: number;
  readonly #onDone: (s: ChangeStream) => void;
  readonly #signal: AbortSignal | undefined;
  #buffer: CommitEvent[] = [];
  #waiter: { resolve: (r: IteratorResult<CommitEvent>) => void; reject: (e: unknown) => void } | null = null;
  #ended = false;
  #error: unknown = null;
  readonly #onAbort = (): void => this.#fail(this.#signal?.reason);

  constructor(capacity: number, onDone: (s: ChangeStream) => void, signal: AbortSignal | undefined) {
    this.#capacity = capacity;
    this.#onDone = onDone;
    this.#signal = signal;
    if (signal?.aborted) this.#fail(signal.reason);
    else signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  push(e: CommitEvent): void {
    if (this.#ended || this.#error !== null) return;
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: e, done: false });
      return;
    }
    if (this.#buffer.length >= this.#capacity) {
      this.#fail(
        new WriteCoordinatorError('WRITECOORDINATOR_CHANGES_OVERFLOW', 'changes() consumer fell behind', {
          retryable: true,
          details: {
            capacity: this.#capacity,
            lastDeliveredSeq: this.#buffer[0] ? this.#buffer[0].seq - 1 : null,
          },
        }),
      );
      return;
    }
    this.#buffer.push(e);
  }

  /** The coordinator closed: buffered events are still delivered, then the iteration ends. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#release();
    if (this.#waiter !== null && this.#buffer.length === 0) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  #fail(e: unknown): void {
    if (this.#error !== null || this.#ended) return;
    this.#error = e ?? new Error('aborted');
    this.#buffer = [];
    this.#release();
    if (this.#waiter !== null) {
      const w = this.#waiter;
      this.#waiter = null;
      w.reject(this.#error);
    }
  }

  #release(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#onDone(this);
  }

  next(): Promise<IteratorResult<CommitEvent>> {
    const e = this.#buffer.shift();
    if (e !== undefined) return Promise.resolve({ value: e, done: false });
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  return(): Promise<IteratorResult<CommitEvent>> {
    this.#buffer = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<CommitEvent> {
    return this;
  }
}
