import { sleep, throwIfAborted } from '@x/core';
import { z } from 'zod';
import { TestkitError } from './errors.js';
import { parseOptions } from './internal/options.js';

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

/** The longest a Node timer can wait; a longer interval would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

const waitForOptions = z.strictObject({
  timeoutMs: z.number().nonnegative().default(DEFAULT_WAIT_FOR_TIMEOUT_MS),
  intervalMs: z.number().int().nonnegative().max(MAX_TIMER_MS).default(DEFAULT_WAIT_FOR_INTERVAL_MS),
  what: z.string().optional(),
  signal: z.instanceof(AbortSignal).optional(),
});

/**
 * For tests where the code under test offers no event: polls `condition` until it holds, failing
 * with TESTKIT_TIMEOUT (naming `what`) once `timeoutMs` has passed. The deadline only bounds a
 * hang; nothing is asserted about how long the wait took.
 */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  options: WaitForOptions = {},
): Promise<void> {
  const { timeoutMs, intervalMs, what, signal } = parseOptions(waitForOptions, options, 'waitFor');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    throwIfAborted(signal);
    if (await condition()) return;
    if (Date.now() >= deadline) {
      throw new TestkitError('TESTKIT_TIMEOUT', `timed out waiting for ${what ?? 'a condition'}`, {
        details: { timeoutMs },
      });
    }
    await sleep(intervalMs, { signal });
  }
}
