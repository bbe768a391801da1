/**
 * Abort-aware waiting. Every function here rejects in one way only: with `signal.reason`, the value
 * the aborting code passed to `controller.abort(reason)` (a DOMException `AbortError` when it passed
 * nothing). A package that promises its callers a coded error instead (say DBX_QUERY_CANCELLED) maps
 * `signal.reason` at its own boundary; it does not write another sleep.
 */

/**
 * Throws `signal.reason` when `signal` has already aborted; returns otherwise.
 *
 * @example
 * ```ts
 * import { throwIfAborted } from '@x/core';
 *
 * async function copyAll(items: string[], signal?: AbortSignal): Promise<void> {
 *   for (const item of items) {
 *     throwIfAborted(signal); // rejects with signal.reason between steps
 *     console.log('copy', item);
 *   }
 * }
 * await copyAll(['a', 'b'], AbortSignal.timeout(1_000));
 * ```
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

export interface SleepOptions {
  /** Aborting it rejects the sleep with `signal.reason` and clears the timer. */
  signal?: AbortSignal | undefined;
  /** Do not keep the process alive for this timer (for deadlines raced against real work). */
  unref?: boolean | undefined;
  /**
   * Ends the sleep early, without an error: `wake` subscribes the function it is given to whatever
   * should end the wait (an `Emitter`'s `once`, say) and returns the function that unsubscribes it.
   * The sleep unsubscribes when it ends, however it ends.
   */
  wake?: ((wakeUp: () => void) => () => void) | undefined;
}

/**
 * Resolves after `ms` milliseconds, or earlier when `wake` fires. Rejects with `signal.reason` at
 * once when `signal` has already aborted, or as soon as it aborts; the timer, the abort listener and
 * the wake subscription are removed either way.
 *
 * @example
 * ```ts
 * import { sleep } from '@x/core';
 *
 * const ac = new AbortController();
 * setTimeout(() => ac.abort(new Error('stop')), 10);
 * await sleep(1_000, { signal: ac.signal }).catch((e: unknown) => console.log((e as Error).message)); // stop
 * ```
 */
export function sleep(ms: number, options: SleepOptions = {}): Promise<void> {
  const { signal, wake } = options;
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    let unsubscribe: (() => void) | undefined;
    let settled = false;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      unsubscribe?.();
      return true;
    };
    const onAbort = (): void => {
      if (finish()) reject(signal?.reason);
    };
    const timer = setTimeout(
      () => {
        if (finish()) resolve();
      },
      Math.max(0, ms),
    );
    if (options.unref) timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (wake !== undefined) {
      unsubscribe = wake(() => {
        if (finish()) resolve();
      });
      // a wake that fired while subscribing has already finished the sleep
      if (settled) unsubscribe();
    }
  });
}

export interface AbortableOptions<T> {
  /**
   * Receives the value when `promise` fulfils after the abort already rejected the race, so that a
   * resource it carries (a pooled connection, say) can be released instead of leaked.
   */
  onLateValue?: ((value: T) => void) | undefined;
}

/**
 * Settles as `promise` does, unless `signal` aborts first: then rejects with `signal.reason`. The
 * underlying work is not cancelled (that is the caller's to arrange); a late rejection is swallowed
 * and a late value handed to `onLateValue`. Without a signal, returns `promise` itself.
 *
 * @example
 * ```ts
 * import { abortable } from '@x/core';
 *
 * const slow = new Promise<string>((resolve) => setTimeout(() => resolve('late'), 50));
 * const result = await abortable(slow, AbortSignal.timeout(5), {
 *   onLateValue: (v) => console.log('released', v),
 * }).catch((e: unknown) => (e as Error).name);
 * console.log(result); // TimeoutError
 * ```
 */
export function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  options: AbortableOptions<T> = {},
): Promise<T> {
  if (signal === undefined) return promise;
  const { onLateValue } = options;
  if (signal.aborted) {
    promise.then(
      (v) => onLateValue?.(v),
      () => {},
    );
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (settled) onLateValue?.(v);
        else {
          settled = true;
          resolve(v);
        }
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          reject(e);
        }
      },
    );
  });
}
