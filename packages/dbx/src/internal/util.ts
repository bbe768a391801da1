import { abortable, sleep as coreSleep } from '@x/core';
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

/**
 * `@x/core`'s waits reject with `signal.reason`; dbx promises DBX_QUERY_CANCELLED (with the reason as
 * `cause`), so its boundary maps one to the other here.
 */
function asCancelled(signal: AbortSignal): (e: unknown) => never {
  return (e) => {
    throw signal.aborted && e === signal.reason ? cancelledError(signal) : e;
  };
}

/** Sleeps `ms`, rejecting with DBX_QUERY_CANCELLED when `signal` aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (!signal) return coreSleep(ms);
  return coreSleep(ms, { signal }).catch(asCancelled(signal));
}

/** A timer that never keeps the process alive (for deadlines raced against real work). */
export function unrefSleep(ms: number): Promise<void> {
  return coreSleep(ms, { unref: true });
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
  return abortable(promise, signal, { onLateValue }).catch(asCancelled(signal));
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
