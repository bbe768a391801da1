export interface FanOutFailure<T> {
  readonly item: T;
  readonly error: unknown;
}

export interface FanOutResult<T> {
  readonly failures: ReadonlyArray<FanOutFailure<T>>;
  /** Items never started (after a failure with `stopOnError`, or after an abort). */
  readonly notStarted: readonly T[];
}

/**
 * Runs `worker` over `items` with at most `concurrency` in flight, in order. After the first failure
 * (when `stopOnError`) or an abort, no new item starts; the ones in flight finish. Never rejects:
 * failures are returned.
 */
export async function fanOut<T>(
  items: readonly T[],
  concurrency: number,
  worker: (item: T) => Promise<void>,
  opts: { stopOnError: boolean; signal?: AbortSignal | undefined },
): Promise<FanOutResult<T>> {
  const failures: Array<FanOutFailure<T>> = [];
  let next = 0;
  let stop = false;
  const lane = async (): Promise<void> => {
    while (!stop && next < items.length) {
      if (opts.signal?.aborted) {
        stop = true;
        break;
      }
      const item = items[next++] as T;
      try {
        await worker(item);
      } catch (error) {
        failures.push({ item, error });
        if (opts.stopOnError) stop = true;
      }
    }
  };
  const lanes = Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, lane);
  await Promise.all(lanes);
  return { failures, notStarted: items.slice(next) };
}
