/** A one-shot cancellation cheaper than an AbortController, for the write hot path. */

/** The part of AbortSignal that `Link.call` uses; `LightSignal` implements it without EventTarget. */
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
