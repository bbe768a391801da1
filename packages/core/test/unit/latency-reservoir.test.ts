import { describe, expect, it } from 'vitest';
import { LatencyReservoir } from '../../src/index.js';

describe('LatencyReservoir', () => {
  it('reports 0 when empty', () => {
    const r = new LatencyReservoir(4);
    expect(r.percentiles(50, 99)).toEqual([0, 0]);
    expect(r.snapshot()).toEqual({ p50Ms: 0, p99Ms: 0 });
  });

  it('computes nearest-rank percentiles over the samples', () => {
    const r = new LatencyReservoir(100);
    for (let i = 100; i >= 1; i--) r.record(i);
    expect(r.count).toBe(100);
    expect(r.percentiles(0, 50, 99, 100)).toEqual([1, 50, 99, 100]);
    expect(r.percentile(1)).toBe(1);
    expect(r.snapshot()).toEqual({ p50Ms: 50, p99Ms: 99 });
  });

  it('keeps only the most recent size samples', () => {
    const r = new LatencyReservoir(3);
    for (const v of [1000, 1000, 1000, 1, 2, 3]) r.record(v);
    expect(r.count).toBe(3);
    expect(r.size).toBe(3);
    expect(r.percentiles(50, 100)).toEqual([2, 3]);
    r.clear();
    expect(r.count).toBe(0);
    expect(r.percentile(50)).toBe(0);
  });

  it('sorts numerically, not as strings', () => {
    const r = new LatencyReservoir(3);
    for (const v of [10, 9, 100]) r.record(v);
    expect(r.percentiles(0, 100)).toEqual([9, 100]);
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => new LatencyReservoir(0)).toThrow(RangeError);
  });
});
