import { describe, expect, it } from 'vitest';
import { ChangeStream, type OverflowPolicy } from '../../src/index.js';

function stream(
  overflow: OverflowPolicy<number>,
  extra: Partial<ConstructorParameters<typeof ChangeStream<number>>[0]> = {},
) {
  return new ChangeStream<number>({ capacity: 3, overflow, ...extra });
}

async function drain(s: ChangeStream<number>): Promise<number[]> {
  const out: number[] = [];
  for await (const e of s) out.push(e);
  return out;
}

describe('ChangeStream', () => {
  it('hands events to a waiting consumer and delivers the buffer before ending', async () => {
    const s = stream('error');
    const first = s.next();
    s.push(1);
    await expect(first).resolves.toEqual({ value: 1, done: false });
    s.push(2);
    s.push(3);
    s.end();
    expect(s.done).toBe(true);
    await expect(drain(s)).resolves.toEqual([2, 3]);
  });

  it('ends a waiting consumer when the producer ends', async () => {
    const s = stream('error');
    const pending = s.next();
    s.end();
    await expect(pending).resolves.toEqual({ value: undefined, done: true });
  });

  it('drop-oldest keeps the newest capacity events and reports each drop', async () => {
    const dropped: number[] = [];
    const s = stream('drop-oldest', { onDrop: (e) => dropped.push(e) });
    for (let i = 1; i <= 5; i++) s.push(i);
    s.end();
    await expect(drain(s)).resolves.toEqual([3, 4, 5]);
    expect(dropped).toEqual([1, 2]);
  });

  it('drop-newest keeps the first capacity events and reports each drop', async () => {
    const dropped: number[] = [];
    const s = stream('drop-newest', { onDrop: (e) => dropped.push(e) });
    for (let i = 1; i <= 5; i++) s.push(i);
    s.end();
    await expect(drain(s)).resolves.toEqual([1, 2, 3]);
    expect(dropped).toEqual([4, 5]);
  });

  it('error fails the stream with overflowError, discarding the buffer, for every later read', async () => {
    const overflow = new Error('behind');
    const seen: unknown[] = [];
    const s = stream('error', {
      overflowError: (capacity, buffered) => {
        seen.push(capacity, [...buffered]);
        return overflow;
      },
    });
    for (let i = 1; i <= 4; i++) s.push(i);
    expect(seen).toEqual([3, [1, 2, 3]]);
    await expect(s.next()).rejects.toBe(overflow);
    await expect(s.next()).rejects.toBe(overflow);
    s.push(9);
    expect(s.buffered).toBe(0);
  });

  it('error without overflowError fails with an Error naming the capacity', async () => {
    const s = stream('error');
    for (let i = 1; i <= 4; i++) s.push(i);
    await expect(s.next()).rejects.toThrow(/3 events/);
  });

  it('a policy function replaces the full buffer', async () => {
    const s = stream((buffered, incoming) => [-(buffered.length + 1), incoming]);
    for (let i = 1; i <= 5; i++) s.push(i);
    s.end();
    await expect(drain(s)).resolves.toEqual([-4, 4, 5]);
  });

  it('an abort fails the stream with signal.reason, rejecting a pending read, and closes it once', async () => {
    const ac = new AbortController();
    let closes = 0;
    const s = stream('error', { signal: ac.signal, onClose: () => closes++ });
    const pending = s.next();
    const reason = new Error('unsubscribed');
    ac.abort(reason);
    await expect(pending).rejects.toBe(reason);
    s.end();
    await s.return();
    expect(closes).toBe(1);
  });

  it('an already aborted signal fails the stream at once', async () => {
    let closes = 0;
    const reason = new Error('late');
    const s = stream('error', { signal: AbortSignal.abort(reason), onClose: () => closes++ });
    expect(s.done).toBe(true);
    expect(closes).toBe(1);
    await expect(s.next()).rejects.toBe(reason);
  });

  it('breaking out of for-await discards the buffer, closes the stream and ignores later pushes', async () => {
    let closes = 0;
    const s = stream('error', { onClose: () => closes++ });
    s.push(1);
    s.push(2);
    for await (const e of s) {
      expect(e).toBe(1);
      break;
    }
    expect(closes).toBe(1);
    s.push(3);
    await expect(s.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it('close() and asyncDispose end the iteration', async () => {
    const a = stream('error');
    a.push(1);
    await a.close();
    await expect(a.next()).resolves.toMatchObject({ done: true });
    let closed = false;
    {
      await using b = stream('error', { onClose: () => (closed = true) });
      b.push(1);
    }
    expect(closed).toBe(true);
  });

  it('delivers undefined events as events', async () => {
    const s = new ChangeStream<number | undefined>({ capacity: 2, overflow: 'error' });
    s.push(undefined);
    s.end();
    await expect(s.next()).resolves.toEqual({ value: undefined, done: false });
    await expect(s.next()).resolves.toEqual({ value: undefined, done: true });
  });

  it('refuses a capacity that is not a positive integer', () => {
    expect(() => stream('error', { capacity: 0 })).toThrow(RangeError);
    expect(() => stream('error', { capacity: 1.5 })).toThrow(RangeError);
  });
});
