import { DbxError, isDbxError, pgErrorCode } from '../errors.js';
import type { Logger, ResolvedClusterOptions } from '../options.js';
import { RetryBudget } from './budget.js';
import { wasNotSent } from './exec.js';
import { backoffDelay, cancelledError, errorMessage, sleep } from './util.js';

/** Writes may be retried only when the statement never reached a server, or a standby refused it. */
export function canRetryWrite(e: unknown): boolean {
  return wasNotSent(e) || pgErrorCode(e) === '25006';
}

/** Retries with full-jitter exponential backoff, bounded by attempts and by the retry budget. */
export class Retrier {
  readonly #options: ResolvedClusterOptions['retry'];
  readonly #logger: Logger;
  readonly #isClosed: () => boolean;
  readonly #budget: RetryBudget | null;
  #retries = 0;

  constructor(options: ResolvedClusterOptions['retry'], logger: Logger, isClosed: () => boolean) {
    this.#options = options;
    this.#logger = logger;
    this.#isClosed = isClosed;
    const b = options.budget;
    this.#budget = b ? new RetryBudget(b.ratio, b.minPerSecond) : null;
  }

  /** Retries made so far. */
  get retries(): number {
    return this.#retries;
  }

  /** Counts a request toward the budget's ratio. */
  deposit(): void {
    this.#budget?.deposit();
  }

  /**
   * Runs `fn` up to `maxAttempts` times while `canRetry` allows, sleeping a full-jitter exponential
   * backoff between attempts. Exhaustion after a retry throws DBX_RETRY_EXHAUSTED with the last error.
   * `prior` is the failure of a first attempt already made (by the hot path).
   */
  async run<T>(
    op: string,
    signal: AbortSignal | undefined,
    maxAttempts: number,
    canRetry: (e: unknown) => boolean,
    fn: () => Promise<T>,
    prior?: { error: unknown },
  ): Promise<T> {
    let last: unknown;
    let attempts = 0;
    let budgetExhausted = false;
    let pending = prior;
    for (;;) {
      if (signal?.aborted) throw cancelledError(signal);
      try {
        attempts++;
        if (pending) {
          // The hot path already made the first attempt and failed with this error.
          const { error } = pending;
          pending = undefined;
          throw error;
        }
        return await fn();
      } catch (e) {
        if (isDbxError(e) && (e.code === 'DBX_QUERY_CANCELLED' || e.code === 'DBX_CLUSTER_CLOSED')) throw e;
        if (!canRetry(e)) throw e;
        last = e;
        if (attempts >= maxAttempts) break;
        if (this.#budget && !this.#budget.tryWithdraw()) {
          budgetExhausted = true;
          break;
        }
        this.#retries++;
        const { baseDelayMs, maxDelayMs } = this.#options;
        const delayMs = backoffDelay(attempts - 1, baseDelayMs, maxDelayMs);
        this.#logger.debug({ op, attempt: attempts, delayMs, err: errorMessage(e) }, 'dbx: retrying');
        await sleep(delayMs, signal);
        if (this.#isClosed()) throw new DbxError('DBX_CLUSTER_CLOSED', 'the cluster is closed');
      }
    }
    if (attempts <= 1 && !budgetExhausted) throw last;
    const details: Record<string, unknown> = { op, attempts };
    if (budgetExhausted) details.budgetExhausted = true;
    const state = pgErrorCode(last);
    if (state !== undefined) details.sqlState = state;
    if (isDbxError(last)) details.lastCode = last.code;
    throw new DbxError(
      'DBX_RETRY_EXHAUSTED',
      budgetExhausted
        ? `${op} failed after ${attempts} attempt(s), retry budget exhausted: ${errorMessage(last)}`
        : `${op} failed after ${attempts} attempts: ${errorMessage(last)}`,
      {
        cause: last,
        details,
      },
    );
  }
}
