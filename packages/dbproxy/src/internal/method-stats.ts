/** Per-method counts, failures by code and latencies, for `metrics().methods`. */
import { LatencyReservoir } from '@x/core';
import { EXCLUSIVE_METRICS_KEY, type MethodMetrics } from '../types.js';

/** Counts and latencies of one write method (or of `runExclusive`). */
export class MethodStats {
  count = 0;
  ok = 0;
  errors: Record<string, number> = {};
  latency = new LatencyReservoir(1024);

  fail(code: string): void {
    this.errors[code] = (this.errors[code] ?? 0) + 1;
  }
}

/** Per-method stats of this process's calls; `metrics().methods`. */
export class MethodStatsTable {
  readonly #methods = new Map<string, MethodStats>();
  readonly #known: Readonly<Record<string, unknown>>;

  constructor(writes: Readonly<Record<string, unknown>>) {
    this.#known = writes;
  }

  for(name: string): MethodStats {
    // unknown names share one bucket, so a caller cannot grow the map without bound
    const method = name === EXCLUSIVE_METRICS_KEY || Object.hasOwn(this.#known, name) ? name : '(unknown)';
    let s = this.#methods.get(method);
    if (s === undefined) {
      s = new MethodStats();
      this.#methods.set(method, s);
    }
    return s;
  }

  snapshot(): Record<string, MethodMetrics> {
    const methods: Record<string, MethodMetrics> = {};
    for (const [name, s] of this.#methods) {
      const [p50Ms = 0, p99Ms = 0] = s.latency.percentiles(50, 99);
      methods[name] = { count: s.count, ok: s.ok, errors: { ...s.errors }, p50Ms, p99Ms };
    }
    return methods;
  }
}
