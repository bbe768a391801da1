import { DbxError } from '../errors.js';

/** Full-jitter exponential backoff: a uniform delay in [0, min(max, base * 2^attempt)). */
export function backoffDelay(attempt: number, baseDelayMs: number, maxDelayMs: number): number {
  const cap = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt));
  return Math.floor(Math.random() * cap);
}

export function cancelledError(signal: AbortSignal, cause?: unknown): DbxError {
  return new DbxError('DBX_QUERY_CANCELLED', 'the operation was cancelled', {
    cause: cause ?? signal.reason,
    details: { reason: String(signal.reason) },
  });
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelledError(signal);
}

/** Sleeps `ms`, rejecting with DBX_QUERY_CANCELLED when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelledError(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(cancelledError(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A timer that never keeps the process alive (for deadlines raced against real work). */
export function unrefSleep(ms: number): Promise<void> {
  return new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });
}

/**
 * Waits for `promise`, rejecting early with DBX_QUERY_CANCELLED on abort. `onLateValue` receives the
 * value if it arrives after the abort (to release a pooled client, say).
 */
export function raceAbort<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  onLateValue?: (v: T) => void,
): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.then(
      (v) => onLateValue?.(v),
      () => {},
    );
    return Promise.reject(cancelledError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const onAbort = () => {
      if (done) return;
      done = true;
      reject(cancelledError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (done) onLateValue?.(v);
        else {
          done = true;
          resolve(v);
        }
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!done) {
          done = true;
          reject(e);
        }
      },
    );
  });
}

/** Combines optional signals. */
export function anySignal(a: AbortSignal | undefined, b: AbortSignal | undefined): AbortSignal | undefined {
  if (!a) return b;
  if (!b) return a;
  return AbortSignal.any([a, b]);
}

/** Rejects after `ms` with `makeError()` unless `promise` settles first. */
export function withTimeout<T>(promise: Promise<T>, ms: number, makeError: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(makeError()), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A tiny typed event emitter whose `on` returns an unsubscribe function. */
export class Emitter<M extends object> {
  #listeners = new Map<keyof M, Set<(e: never) => void>>();

  on<E extends keyof M>(event: E, listener: (e: M[E]) => void): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as (e: never) => void);
    return () => {
      set.delete(listener as (e: never) => void);
    };
  }

  emit<E extends keyof M>(event: E, payload: M[E], onListenerError: (e: unknown) => void): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const l of [...set]) {
      try {
        (l as (e: M[E]) => void)(payload);
      } catch (e) {
        onListenerError(e);
      }
    }
  }

  clear(): void {
    this.#listeners.clear();
  }
}
