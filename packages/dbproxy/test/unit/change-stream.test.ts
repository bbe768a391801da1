import { describe, expect, it } from 'vitest';
import { ChangeStream } from '../../src/internal/change-stream.js';

const w = (seq: number) => ({
  type: 'write' as const,
  seq,
  epoch: 1,
  method: 'm',
  requestId: `r${seq}`,
  sourceInstanceId: 's',
});

describe('ChangeStream', () => {
  it('delivers in order, and replaces an overflowing backlog by one gap', async () => {
    let ended = 0;
    const s = new ChangeStream(3, () => ended++);
    s.push(w(1));
    s.push(w(2));
    expect((await s.next()).value).toEqual(w(1));
    s.push(w(3));
    s.push(w(4));
    s.push(w(5)); // buffer holds 2,3,4: overflow
    expect((await s.next()).value).toEqual({ type: 'gap', afterSeq: 1, toSeq: 5 });
    s.push(w(6));
    expect((await s.next()).value).toEqual(w(6));
    await s.return();
    expect((await s.next()).done).toBe(true);
    expect(ended).toBe(1);
  });

  it('rejects a pending next() with the abort reason', async () => {
    const ac = new AbortController();
    const s = new ChangeStream(10, () => {}, ac.signal);
    const p = s.next();
    const reason = new Error('stop');
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
  });
});
