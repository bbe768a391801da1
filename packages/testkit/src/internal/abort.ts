import { setTimeout as sleepTimer } from 'node:timers/promises';
import { TestkitError } from '../errors.js';

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

export function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new TestkitError('TESTKIT_ABORTED', 'operation aborted');
}

/** Sleeps `ms`, rejecting with `signal.reason` when aborted. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  throwIfAborted(signal);
  try {
    await sleepTimer(ms, undefined, signal ? { signal } : undefined);
  } catch (e) {
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}
