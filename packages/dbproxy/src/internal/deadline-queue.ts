/** Write deadlines kept by one timer per timeout value instead of one timer per write. */

interface DeadlineEntry {
  at: number;
  fire: () => void;
  done: boolean;
}

/**
 * Deadlines without a timer per write: entries with the same timeout expire in insertion order, so
 * each timeout value keeps a FIFO and a single (unref'd) timer for its head. Cancelling marks an
 * entry done; done entries are dropped when they reach the head.
 */
export class DeadlineQueue {
  #lanes = new Map<number, { items: DeadlineEntry[]; head: number; timer: NodeJS.Timeout | null }>();

  add(timeoutMs: number, fire: () => void): { cancel(): void } {
    let lane = this.#lanes.get(timeoutMs);
    if (lane === undefined) {
      lane = { items: [], head: 0, timer: null };
      this.#lanes.set(timeoutMs, lane);
    }
    const entry: DeadlineEntry = { at: performance.now() + timeoutMs, fire, done: false };
    lane.items.push(entry);
    if (lane.timer === null) this.#arm(timeoutMs);
    return {
      cancel() {
        entry.done = true;
      },
    };
  }

  #arm(timeoutMs: number): void {
    const lane = this.#lanes.get(timeoutMs);
    if (lane === undefined) return;
    while (lane.head < lane.items.length && lane.items[lane.head]!.done) lane.head++;
    if (lane.head >= lane.items.length) {
      this.#lanes.delete(timeoutMs);
      return;
    }
    if (lane.head > 1024 && lane.head * 2 > lane.items.length) {
      lane.items = lane.items.slice(lane.head);
      lane.head = 0;
    }
    const wait = Math.max(0, lane.items[lane.head]!.at - performance.now());
    lane.timer = setTimeout(() => {
      lane.timer = null;
      const now = performance.now();
      while (lane.head < lane.items.length && lane.items[lane.head]!.at <= now) {
        const e = lane.items[lane.head++]!;
        if (!e.done) {
          e.done = true;
          e.fire();
        }
      }
      this.#arm(timeoutMs);
    }, wait + 1);
    lane.timer.unref();
  }
}
