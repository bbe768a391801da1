import { WriteCoordinatorError } from '../errors.js';
import type { Logger } from '../options.js';
import type { CommitEvent } from '../types.js';
import { ChangeStream } from './changes.js';

/** Who hears of commits: `subscribe` listeners and `changes()` streams. */
export class CommitEvents {
  readonly #listeners = new Set<(e: CommitEvent) => void>();
  readonly #streams = new Set<ChangeStream>();
  readonly #bufferSize: number;
  readonly #log: Logger;

  constructor(bufferSize: number, log: Logger) {
    this.#bufferSize = bufferSize;
    this.#log = log;
  }

  /** Whether anyone listens (else the writer loop builds no events). */
  get listening(): boolean {
    return this.#listeners.size > 0 || this.#streams.size > 0;
  }

  /** `closed`: the coordinator is closing or closed; nothing is added any more. */
  subscribe(listener: (e: CommitEvent) => void, closed: boolean): () => void {
    if (typeof listener !== 'function') {
      throw new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'listener must be a function');
    }
    if (closed) return () => {};
    // Wrapped so that subscribing the same function twice gives two independent subscriptions.
    const l = (e: CommitEvent): void => listener(e);
    this.#listeners.add(l);
    return () => {
      this.#listeners.delete(l);
    };
  }

  changes(signal: AbortSignal | undefined, closed: boolean): AsyncIterable<CommitEvent> {
    const stream = new ChangeStream(this.#bufferSize, (s) => this.#streams.delete(s), signal);
    if (closed) stream.end();
    else if (!signal?.aborted) this.#streams.add(stream);
    return stream;
  }

  emit(e: CommitEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch (err) {
        this.#log.error({ err, seq: e.seq }, 'writecoordinator: a change listener threw');
      }
    }
    for (const s of this.#streams) s.push(e);
  }

  /** At close: streams end, listeners are dropped. */
  end(): void {
    for (const s of [...this.#streams]) s.end();
    this.#streams.clear();
    this.#listeners.clear();
  }
}
