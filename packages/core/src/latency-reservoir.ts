/**
 * The most recent `size` samples in a ring; percentiles are computed over that window on demand, so
 * recording costs one store and memory stays fixed however long the process runs.
 *
 * @example
 * ```ts
 * import { LatencyReservoir } from '@x/core';
 *
 * const latencies = new LatencyReservoir(1_024);
 * for (const ms of [3, 5, 4, 40, 6]) latencies.record(ms);
 * const [p50, p99] = latencies.percentiles(50, 99);
 * console.log(p50, p99); // 5 40
 * ```
 */
export class LatencyReservoir {
  readonly #ring: Float64Array;
  #next = 0;
  #count = 0;

  constructor(size: number) {
    if (!Number.isInteger(size) || size <= 0) {
      throw new RangeError(`a latency reservoir needs a positive integer size, got ${size}`);
    }
    this.#ring = new Float64Array(size);
  }

  /** The window's size. */
  get size(): number {
    return this.#ring.length;
  }

  /** How many samples the window holds now (at most `size`). */
  get count(): number {
    return this.#count;
  }

  /** Adds one sample (milliseconds); once the window is full it replaces the oldest one. */
  record(ms: number): void {
    this.#ring[this.#next] = ms;
    this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1;
    if (this.#count < this.#ring.length) this.#count++;
  }

  /** Nearest-rank percentiles (each p in 0..100) over the window, in the order asked; 0 when empty. */
  percentiles(...ps: number[]): number[] {
    if (this.#count === 0) return ps.map(() => 0);
    const sorted = this.#ring.slice(0, this.#count).sort();
    return ps.map((p) => {
      const rank = Math.min(this.#count - 1, Math.max(0, Math.ceil((p / 100) * this.#count) - 1));
      return sorted[rank] ?? 0;
    });
  }

  /** One nearest-rank percentile (p in 0..100); 0 when empty. */
  percentile(p: number): number {
    return this.percentiles(p)[0] ?? 0;
  }

  /** The two figures every package's metrics report. */
  snapshot(): { p50Ms: number; p99Ms: number } {
    const [p50Ms = 0, p99Ms = 0] = this.percentiles(50, 99);
    return { p50Ms, p99Ms };
  }

  /** Forgets every sample: `count` is 0 and percentiles are 0 until the next `record`. */
  clear(): void {
    this.#next = 0;
    this.#count = 0;
  }
}
