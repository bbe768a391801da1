import { ChangeStream, Emitter } from '@x/core';
import { WriteCoordinatorError } from '../errors.js';
import type { Logger } from '../options.js';
import type { CommitEvent } from '../types.js';

interface CommitEventsMap {
  commit: CommitEvent;
  /** The coordinator closed: `changes()` streams end. */
  end: undefined;
}

/**
 * A `changes()` consumer fell more than `capacity` events behind: its stream fails with this
 * rather than letting its buffer grow without bound; `lastDeliveredSeq` lets it resynchronise.
 */
function changesOverflowError(capacity: number, buffered: readonly CommitEvent[]): WriteCoordinatorError {
  const oldest = buffered[0];
  return new WriteCoordinatorError('WRITECOORDINATOR_CHANGES_OVERFLOW', 'changes() consumer fell behind', {
    retryable: true,
    details: { capacity, lastDeliveredSeq: oldest === undefined ? null : oldest.seq - 1 },
  });
}

/**
 * Who hears of commits: `subscribe` listeners and `changes()` streams, both registered on one
 * `@x/core` `Emitter`. Each `changes()` call is an `@x/core` `ChangeStream` of `bufferSize` events that
 * fails with CHANGES_OVERFLOW when its consumer falls that far behind.
 */
export class CommitEvents {
  readonly #emitter = new Emitter<CommitEventsMap>();
  readonly #bufferSize: number;
  readonly #log: Logger;

  constructor(bufferSize: number, log: Logger) {
    this.#bufferSize = bufferSize;
    this.#log = log;
  }

  /** Whether anyone listens (else the writer loop builds no events). */
  get listening(): boolean {
    return this.#emitter.listenerCount('commit') > 0;
  }

  /** `closed`: the coordinator is closing or closed; nothing is added any more. */
  subscribe(listener: (e: CommitEvent) => void, closed: boolean): () => void {
    if (typeof listener !== 'function') {
      throw new WriteCoordinatorError('WRITECOORDINATOR_INVALID_PARAMS', 'listener must be a function');
    }
    if (closed) return () => {};
    // Wrapped so that subscribing the same function twice gives two independent subscriptions, and
    // so that what a listener throws is logged with the sequence it was given.
    return this.#emitter.on('commit', (e) => {
      try {
        listener(e);
      } catch (err) {
        this.#log.error({ err, seq: e.seq }, 'writecoordinator: a change listener threw');
      }
    });
  }

  changes(signal: AbortSignal | undefined, closed: boolean): AsyncIterable<CommitEvent> {
    // Set once the stream is registered; the stream unregisters itself when it is done (ended,
    // failed, aborted or left by its consumer). A stream done at birth is never registered.
    let unregister: Array<() => void> = [];
    const stream = new ChangeStream<CommitEvent>({
      capacity: this.#bufferSize,
      overflow: 'error',
      overflowError: changesOverflowError,
      signal,
      onClose: () => {
        for (const off of unregister) off();
      },
    });
    if (closed) stream.end();
    else if (!stream.done) {
      unregister = [
        this.#emitter.on('commit', (e) => stream.push(e)),
        this.#emitter.on('end', () => stream.end()),
      ];
    }
    return stream;
  }

  emit(e: CommitEvent): void {
    this.#emitter.emit('commit', e);
  }

  /** At close: streams end (after delivering what they buffered), listeners are dropped. */
  end(): void {
    this.#emitter.emit('end', undefined);
    this.#emitter.clear();
  }
}
