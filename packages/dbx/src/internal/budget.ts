const WINDOW_S = 10;

/** Counts over the last ten seconds, in one-second slots. */
class Window {
  readonly #slots = new Float64Array(WINDOW_S);
  #sec = 0;

  #roll(now: number): void {
    const s = Math.floor(now / 1000);
    if (s - this.#sec >= WINDOW_S) this.#slots.fill(0);
    else for (let t = this.#sec + 1; t <= s; t++) this.#slots[t % WINDOW_S] = 0;
    if (s > this.#sec) this.#sec = s;
  }

  add(now: number, n: number): void {
    this.#roll(now);
    this.#slots[this.#sec % WINDOW_S] = (this.#slots[this.#sec % WINDOW_S] ?? 0) + n;
  }

  sum(now: number): number {
    this.#roll(now);
    let total = 0;
    for (const v of this.#slots) total += v;
    return total;
  }
}

/**
 * A retry budget (as in Finagle): over the last ten seconds, retries may number at most
 * `minPerSecond × 10 + ratio × requests`. During an outage retries then stay a bounded share of
 * traffic instead of multiplying the load on a struggling server.
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #floor: number;
  readonly #requests = new Window();
  readonly #retries = new Window();

  constructor(ratio: number, minPerSecond: number) {
    this.#ratio = ratio;
    this.#floor = minPerSecond * WINDOW_S;
  }

  /** One request (not a retry) started. */
  deposit(): void {
    this.#requests.add(Date.now(), 1);
  }

  /** True (and counted) when one more retry fits the budget. */
  tryWithdraw(): boolean {
    const now = Date.now();
    const allowed = this.#floor + this.#ratio * this.#requests.sum(now);
    if (this.#retries.sum(now) + 1 > allowed) return false;
    this.#retries.add(now, 1);
    return true;
  }
}
