/** Sends on one ZeroMQ socket, one at a time, coalesced into one JSON frame per destination. */

/**
 * Serialises sends on one ZeroMQ socket (zeromq.js allows a single pending send) and coalesces
 * everything queued while a send was pending into one frame per destination.
 */
export class CoalescingSender<T> {
  #queue: Array<{ to: string; item: T }> = [];
  #running = false;

  constructor(
    private readonly sendFrame: (to: string, items: T[]) => Promise<void>,
    private readonly onError: (e: unknown) => void,
  ) {}

  push(to: string, item: T): void {
    this.#queue.push({ to, item });
    if (!this.#running) {
      // Start on the next check phase: everything queued by the current batch of callbacks and
      // their promise continuations (say, the follow-up writes of 200 answered ones) goes out as
      // one frame per destination instead of 200.
      this.#running = true;
      setImmediate(this.#kick);
    }
  }

  readonly #kick = (): void => {
    void this.#drain();
  };

  get queued(): number {
    return this.#queue.length;
  }

  /** True while frames are queued or a send is pending. */
  get busy(): boolean {
    return this.#running || this.#queue.length > 0;
  }

  clear(): void {
    this.#queue = [];
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        const byDest = new Map<string, T[]>();
        for (const { to, item } of batch) {
          const list = byDest.get(to);
          if (list === undefined) byDest.set(to, [item]);
          else list.push(item);
        }
        for (const [to, items] of byDest) {
          try {
            await this.sendFrame(to, items);
          } catch (e) {
            this.onError(e);
          }
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

/**
 * One JSON frame for items coalesced into one send: a single item alone, several as an array. Each
 * item is encoded on its own, so one that JSON cannot carry is handed to `onUnencodable` (which may
 * return a replacement, or null to leave it out) and never costs the others their frame.
 */
export function encodeFrame<T>(
  items: readonly T[],
  onUnencodable: (item: T, e: unknown) => string | null,
): string | null {
  const parts: string[] = [];
  for (const item of items) {
    let json: string | null;
    try {
      json = JSON.stringify(item);
    } catch (e) {
      json = onUnencodable(item, e);
    }
    if (json !== null) parts.push(json);
  }
  if (parts.length === 0) return null;
  return parts.length === 1 ? parts[0]! : `[${parts.join(',')}]`;
}
