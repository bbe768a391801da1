import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { benchRatio, measureThroughput, percentile, reportBench } from '../../src/bench/index.js';
import { type TempDir, tempDir } from '../../src/index.js';

describe('percentile', () => {
  it('interpolates between closest ranks of unsorted input', () => {
    const xs = [5, 1, 4, 2, 3];
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile(xs, 50)).toBe(3);
    expect(percentile(xs, 100)).toBe(5);
    expect(percentile(xs, 25)).toBe(2);
    expect(percentile([1, 2], 50)).toBe(1.5);
    expect(percentile(xs, 0.5)).toBe(3); // a fraction reads as a percentage
    expect(xs).toEqual([5, 1, 4, 2, 3]); // input untouched
    expect(percentile([], 50)).toBeNaN();
  });
  it('rejects p outside 0..100', () => {
    expect(() => percentile([1], 101)).toThrow(expect.objectContaining({ code: 'TESTKIT_INVALID_OPTIONS' }));
  });
});

describe('benchRatio', () => {
  it('is value / baseline, inverted for lower-is-better, null without a baseline', () => {
    expect(benchRatio({ name: 'a', value: 200, unit: 'ops/s', baseline: { name: 'b', value: 100 } })).toBe(2);
    expect(
      benchRatio({ name: 'a', value: 4, unit: 'ms', baseline: { name: 'b', value: 1 }, lowerIsBetter: true }),
    ).toBe(0.25);
    expect(benchRatio({ name: 'a', value: 4, unit: 'ms', baseline: null })).toBeNull();
  });
});

describe('measureThroughput', () => {
  it('counts completed calls over the duration with concurrency', async () => {
    // A fake clock that only the calls move (10 ms each): the count does not depend on timing.
    let clock = 0;
    const now = vi.spyOn(performance, 'now').mockImplementation(() => clock);
    try {
      let calls = 0;
      let inFlight = 0;
      let maxInFlight = 0;
      const r = await measureThroughput(
        async () => {
          calls++;
          clock += 10;
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          await Promise.resolve();
          inFlight--;
        },
        { durationMs: 100, concurrency: 3 },
      );
      expect(calls).toBe(10); // started at 0, 10, ..., 90 ms; none at the 100 ms deadline
      expect(r.ops).toBe(10);
      expect(maxInFlight).toBe(3);
      expect(r.perSecond).toBe(100); // 10 calls in 100 ms
    } finally {
      now.mockRestore();
    }
  });
});

describe('reportBench', () => {
  let dir: TempDir;
  beforeEach(async () => {
    dir = await tempDir('bench');
    vi.stubEnv('X_BENCH_RESULTS_DIR', dir.path);
  });
  afterEach(async () => {
    vi.unstubAllEnvs();
    await dir.cleanup();
  });

  it('writes the documented shape and merges by name', async () => {
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      await reportBench('demo-pkg', [
        { name: 'x-per-sec', value: 300, unit: 'ops/s', baseline: { name: 'y-per-sec', value: 100 } },
        { name: 'solo', value: 1, unit: 'ms', baseline: null },
      ]);
      await reportBench('demo-pkg', [
        { name: 'x-per-sec', value: 200, unit: 'ops/s', baseline: { name: 'y-per-sec', value: 100 } },
        {
          name: 'lat-p99-ms',
          value: 2,
          unit: 'ms',
          baseline: { name: 'base-p99-ms', value: 1 },
          lowerIsBetter: true,
        },
      ]);
    } finally {
      write.mockRestore();
    }
    const file = JSON.parse(await readFile(join(dir.path, 'demo-pkg.json'), 'utf8'));
    expect(file.package).toBe('demo-pkg');
    expect(file.machine).toEqual({
      cpus: expect.any(Number),
      memory: expect.any(Number),
      node: process.version,
      load: [expect.any(Number), expect.any(Number), expect.any(Number)],
    });
    const load = [expect.any(Number), expect.any(Number), expect.any(Number)];
    expect(file.results).toEqual([
      {
        name: 'x-per-sec',
        value: 200,
        unit: 'ops/s',
        baseline: { name: 'y-per-sec', value: 100 },
        ratio: 2,
        load,
      },
      { name: 'solo', value: 1, unit: 'ms', baseline: null, ratio: null, load },
      {
        name: 'lat-p99-ms',
        value: 2,
        unit: 'ms',
        baseline: { name: 'base-p99-ms', value: 1 },
        ratio: 0.5,
        load,
      },
    ]);
  });

  it('rejects a non-finite value', async () => {
    await expect(
      reportBench('demo-pkg', [{ name: 'bad', value: Number.NaN, unit: 'x', baseline: null }]),
    ).rejects.toMatchObject({
      code: 'TESTKIT_INVALID_OPTIONS',
    });
  });
});
