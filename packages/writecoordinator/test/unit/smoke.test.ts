import { describe, expect, it } from 'vitest';
import { insert, openCoordinator, tempDb, values } from '../helpers/db.js';

describe('smoke', () => {
  it('commits a batch and isolates a failure', async () => {
    const t = tempDb();
    const { db, wc } = openCoordinator(t);
    const ps = [
      wc.submit(insert('a')),
      wc.submit(insert('b')),
      wc.submit(insert('a')),
      wc.submit(insert('c')),
    ];
    const rs = await Promise.allSettled(ps);
    expect(rs.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(values(db)).toEqual(['a', 'b', 'c']);
    expect(wc.seq).toBe(1);
    await wc.close();
    t.cleanup();
  });
});
