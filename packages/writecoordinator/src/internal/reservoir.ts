/** The most recent `size` samples in a ring; percentiles are computed over that window on demand. */
export class LatencyReservoir {
  readonly #ring: Float64Array;
  #next = 0;
  #count = 0;

  constructor(size: number) {
    this.#ring = new Float64Array(size);
  }

  record(ms: number): void {
    this.#ring[this.#next] = ms;
    this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1;
    if (this.#count < this.#ring.length) this.#count++;
  }

  /** Nearest-rank percentiles (p in 0..100) over the window; 0 when empty. */
  percentiles(...ps: number[]): number[] {
    if (this.#count === 0) return ps.map(() => 0);
    const sorted = this.#ring.slice(0, this.#count).sort();
    return ps.map((p) => {
      const rank = Math.min(this.#count - 1, Math.max(0, Math.ceil((p / 100) * this.#count) - 1));
      return sorted[rank] ?? 0;
    });
  }
}
