import { describe, expect, it } from 'vitest';
import { fanOut } from '../../src/internal/fanout.js';

/** One macrotask hop (no fixed delay), so the workers really overlap. */
const tick = () => new Promise((r) => setImmediate(r));

describe('fanOut', () => {
  it('never runs more than `concurrency` at once and runs every item once', async () => {
    let active = 0;
    let max = 0;
    const seen: number[] = [];
    const items = Array.from({ length: 50 }, (_, i) => i);
    const r = await fanOut(
      items,
      4,
      async (i) => {
        active++;
        max = Math.max(max, active);
        await tick();
        seen.push(i);
        active--;
      },
      { stopOnError: true },
    );
    expect(max).toBe(4);
    expect(seen.sort((a, b) => a - b)).toEqual(items);
    expect(r).toEqual({ failures: [], notStarted: [] });
  });

  it('stops starting items after a failure when asked, and reports what never started', async () => {
    const r = await fanOut(
      Array.from({ length: 20 }, (_, i) => i),
      2,
      async (i) => {
        await tick();
        if (i === 5) throw new Error('five');
      },
      { stopOnError: true },
    );
    expect(r.failures.map((f) => f.item)).toEqual([5]);
    expect(r.notStarted.length).toBeGreaterThan(10);
    expect(r.notStarted[0]).toBeGreaterThan(5);
  });

  it('collects every failure otherwise, and stops on abort', async () => {
    const all = await fanOut(
      [1, 2, 3, 4],
      2,
      async (i) => {
        if (i % 2 === 0) throw new Error(String(i));
      },
      { stopOnError: false },
    );
    expect(all.failures.map((f) => f.item).sort()).toEqual([2, 4]);
    const ac = new AbortController();
    const aborted = await fanOut(
      Array.from({ length: 10 }, (_, i) => i),
      1,
      async (i) => {
        if (i === 2) ac.abort();
      },
      { stopOnError: false, signal: ac.signal },
    );
    expect(aborted.notStarted).toEqual([3, 4, 5, 6, 7, 8, 9]);
  });
});
