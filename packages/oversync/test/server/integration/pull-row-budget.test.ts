// A pull page is bounded by rows as well as bundles, so no request parameter (max_bundles=5000)
// can make one request load an unbounded number of rows (issue #14, point 5).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createFixture, Device, type Fixture, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture({ service: { limits: { maxRowsPerPull: 3 } } });
});
afterAll(async () => {
  await fx?.close();
});

type PullBody = {
  stable_bundle_seq: number;
  has_more: boolean;
  bundles: Array<{ bundle_seq: number; rows: unknown[] }>;
};

describe('pull row budget', () => {
  test('pages stop at the row budget, always carry one bundle, and walk to the stable point', async () => {
    const d = new Device(fx.app, `b-${randomUUID()}`);
    await d.connect(false);
    const sizes = [2, 2, 5, 1];
    for (const n of sizes) {
      const rows = Array.from({ length: n }, (_, i) => userRow(randomUUID(), `r${i}`));
      expect((await d.push(rows)).status).toBe(200);
    }
    const pages: number[][] = [];
    let after = 0;
    for (let guard = 0; guard < 10; guard++) {
      const r = await d.json<PullBody>(
        'GET',
        `/sync/pull?after_bundle_seq=${after}&max_bundles=5000&target_bundle_seq=4`,
      );
      expect(r.status).toBe(200);
      pages.push(r.body.bundles.map((b) => b.rows.length));
      after = r.body.bundles.at(-1)?.bundle_seq ?? after;
      if (!r.body.has_more) break;
    }
    // 2 | 2 (2+2 > 3) | 5 (alone, over the budget) + nothing more | 1
    expect(pages).toEqual([[2], [2], [5], [1]]);
    expect(after).toBe(4);
  });
});
