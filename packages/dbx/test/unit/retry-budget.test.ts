import { describe, expect, it } from 'vitest';
import { createCluster } from '../../src/index.js';
import { RetryBudget } from '../../src/internal/budget.js';

describe('retry budget', () => {
  it('allows minPerSecond × 10 retries plus ratio × requests over ten seconds', () => {
    const b = new RetryBudget(0.5, 1);
    let granted = 0;
    while (b.tryWithdraw()) granted++;
    expect(granted).toBe(10);
    for (let i = 0; i < 8; i++) b.deposit();
    granted = 0;
    while (b.tryWithdraw()) granted++;
    expect(granted).toBe(4);
  });

  it('bounds the retries of a cluster whose server refuses connections (real sockets, port 1)', async () => {
    await using c = createCluster({
      primary: 'postgres://u:p@127.0.0.1:1/none',
      retry: { maxAttempts: 5, baseDelayMs: 0, maxDelayMs: 0, budget: { ratio: 0, minPerSecond: 0.5 } },
      healthCheck: { intervalMs: 60_000 },
    });
    const results = await Promise.all(
      Array.from({ length: 10 }, () => c.query('select 1').catch((e: unknown) => e)),
    );
    // Without a budget: 10 × 4 = 40 retries. With it: 5 (0.5/s over the 10 s window).
    expect(c.stats().retries).toBe(5);
    for (const r of results) expect(r).toMatchObject({ code: 'DBX_RETRY_EXHAUSTED' });
    expect(
      results.filter((r) => (r as { details?: { budgetExhausted?: boolean } }).details?.budgetExhausted),
    ).not.toHaveLength(0);

    await using unbounded = createCluster({
      primary: 'postgres://u:p@127.0.0.1:1/none',
      retry: { maxAttempts: 5, baseDelayMs: 0, maxDelayMs: 0, budget: null },
      healthCheck: { intervalMs: 60_000 },
    });
    await Promise.all(Array.from({ length: 10 }, () => unbounded.query('select 1').catch(() => undefined)));
    expect(unbounded.stats().retries).toBe(40);
  });
});
