/** A listener of one event of an events map. */
export type Listener<T> = (payload: T) => void;

/** The options of an {@link Emitter}. */
export interface EmitterOptions {
  /**
   * Receives what a listener throws; the emit goes on with the next listener and the code that
   * emitted never sees the error. Default: the error is rethrown on a microtask (it surfaces as an
   * uncaught exception rather than vanishing).
   */
  onListenerError?: ((error: unknown, event: PropertyKey) => void) | undefined;
}

/**
 * A typed event emitter for an events map `{ eventName: payloadType }`, whose `on` returns the
 * function that unsubscribes (PowerSync's registration style). Listeners run synchronously in the
 * order they subscribed, over a snapshot: one that subscribes or unsubscribes during an emit takes
 * effect from the next emit.
 *
 * @example
 * ```ts
 * import { Emitter } from '@x/core';
 *
 * const events = new Emitter<{ saved: { id: string } }>();
 * const off = events.on('saved', ({ id }) => console.log('saved', id));
 * events.emit('saved', { id: 'n1' }); // saved n1
 * off();
 * events.emit('saved', { id: 'n2' }); // nobody listens any more
 * ```
 */
export class Emitter<M extends object> {
  readonly #listeners = new Map<keyof M, Set<Listener<never>>>();
  readonly #onListenerError: (error: unknown, event: PropertyKey) => void;

  constructor(options: EmitterOptions = {}) {
    this.#onListenerError =
      options.onListenerError ??
      ((error) =>
        queueMicrotask(() => {
          throw error;
        }));
  }

  /** Calls `listener` on every `event` until the returned function is called (idempotent). */
  on<E extends keyof M>(event: E, listener: Listener<M[E]>): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    const l = listener as Listener<never>;
    set.add(l);
    return () => {
      const current = this.#listeners.get(event);
      if (current === undefined) return;
      current.delete(l);
      if (current.size === 0) this.#listeners.delete(event);
    };
  }

  /** Calls `listener` on the next `event` only; the returned function cancels that. */
  once<E extends keyof M>(event: E, listener: Listener<M[E]>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /**
   * Calls every listener of `event` with `payload`, synchronously, in subscription order. A listener
   * that throws does not stop the others: its error goes to `onListenerError`.
   */
  emit<E extends keyof M>(event: E, payload: M[E]): void {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    for (const l of [...set]) {
      try {
        (l as Listener<M[E]>)(payload);
      } catch (error) {
        this.#onListenerError(error, event);
      }
    }
  }

  /** How many listeners `event` has now. */
  listenerCount(event: keyof M): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Unsubscribes every listener of every event. */
  clear(): void {
    this.#listeners.clear();
  }
}
