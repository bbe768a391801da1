import { describe, expect, it } from 'vitest';
import { abortable, sleep, throwIfAborted } from '../../src/index.js';

/** deferred, which Node 20 lacks. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('throwIfAborted', () => {
  it('returns for no signal and for a live one', () => {
    expect(() => throwIfAborted(undefined)).not.toThrow();
    expect(() => throwIfAborted(new AbortController().signal)).not.toThrow();
  });

  it('throws signal.reason once aborted', () => {
    const reason = new Error('stop');
    expect(() => throwIfAborted(AbortSignal.abort(reason))).toThrow(reason);
  });
});

describe('sleep', () => {
  it('resolves when the time has passed', async () => {
    await expect(sleep(1)).resolves.toBeUndefined();
    await expect(sleep(0, { signal: new AbortController().signal, unref: true })).resolves.toBeUndefined();
  });

  it('rejects with signal.reason when the signal has already aborted', async () => {
    const reason = new Error('before');
    await expect(sleep(60_000, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('rejects with signal.reason when the signal aborts while it waits', async () => {
    const ac = new AbortController();
    const reason = { why: 'any value is the reason' };
    const p = sleep(60_000, { signal: ac.signal });
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
  });

  it('resolves early when wake fires, and unsubscribes from it however it ends', async () => {
    const subscribed = new Set<() => void>();
    const wake = (wakeUp: () => void): (() => void) => {
      subscribed.add(wakeUp);
      return () => subscribed.delete(wakeUp);
    };
    const woken = sleep(60_000, { wake });
    expect(subscribed.size).toBe(1);
    for (const w of [...subscribed]) w();
    await expect(woken).resolves.toBeUndefined();
    expect(subscribed.size).toBe(0);

    const ac = new AbortController();
    const aborted = sleep(60_000, { signal: ac.signal, wake });
    const reason = new Error('stop');
    ac.abort(reason);
    await expect(aborted).rejects.toBe(reason);
    expect(subscribed.size).toBe(0);

    await expect(sleep(0, { wake })).resolves.toBeUndefined();
    expect(subscribed.size).toBe(0);
  });

  it('resolves when wake fires while it subscribes', async () => {
    let unsubscribed = 0;
    const p = sleep(60_000, {
      wake: (wakeUp) => {
        wakeUp();
        return () => unsubscribed++;
      },
    });
    await expect(p).resolves.toBeUndefined();
    expect(unsubscribed).toBe(1);
  });

  it('rejects with the AbortError DOMException when abort() was given no reason', async () => {
    const ac = new AbortController();
    const p = sleep(60_000, { signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
  });
});

describe('abortable', () => {
  it('returns the promise itself without a signal', () => {
    const p = Promise.resolve(1);
    expect(abortable(p, undefined)).toBe(p);
  });

  it('settles as the promise does while the signal stays live', async () => {
    const signal = new AbortController().signal;
    await expect(abortable(Promise.resolve('v'), signal)).resolves.toBe('v');
    const e = new Error('inner');
    await expect(abortable(Promise.reject(e), signal)).rejects.toBe(e);
  });

  it('rejects with signal.reason on abort and hands a late value to onLateValue', async () => {
    const ac = new AbortController();
    const { promise, resolve } = deferred<string>();
    const late = deferred<string>();
    const p = abortable(promise, ac.signal, { onLateValue: late.resolve });
    const reason = new Error('abort');
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
    resolve('connection');
    await expect(late.promise).resolves.toBe('connection');
  });

  it('rejects at once for an aborted signal and still releases the late value', async () => {
    const reason = new Error('already');
    const late = deferred<number>();
    await expect(
      abortable(Promise.resolve(7), AbortSignal.abort(reason), { onLateValue: late.resolve }),
    ).rejects.toBe(reason);
    await expect(late.promise).resolves.toBe(7);
  });
});
