import { sleep, throwIfAborted } from '@x/core';
import { TestkitError } from './errors.js';

export const DEFAULT_WAIT_FOR_TIMEOUT_MS = 15_000;
export const DEFAULT_WAIT_FOR_INTERVAL_MS = 20;

export interface WaitForOptions {
  /** Give up after this long (default `DEFAULT_WAIT_FOR_TIMEOUT_MS`). */
  timeoutMs?: number;
  /** Time between checks (default `DEFAULT_WAIT_FOR_INTERVAL_MS`). */
  intervalMs?: number;
  /** Named in the timeout error. */
  what?: string;
  signal?: AbortSignal | undefined;
}

/**
 * For tests where the code under test offers no event: polls `condition` until it holds, failing
 * with TESTKIT_TIMEOUT (naming `what`) once `timeoutMs` has passed. The deadline only bounds a
 * hang; nothing is asserted about how long the wait took.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: WaitForOptions = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_WAIT_FOR_TIMEOUT_MS);
  for (;;) {
    throwIfAborted(options.signal);
    if (await condition()) return;
    if (Date.now() >= deadline) {
      throw new TestkitError('TESTKIT_TIMEOUT', `timed out waiting for ${options.what ?? 'a condition'}`, {
        details: { timeoutMs: options.timeoutMs ?? DEFAULT_WAIT_FOR_TIMEOUT_MS },
      });
    }
    await sleep(options.intervalMs ?? DEFAULT_WAIT_FOR_INTERVAL_MS, { signal: options.signal });
  }
}
