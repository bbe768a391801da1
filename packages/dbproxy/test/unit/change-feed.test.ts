import { SILENT_LOGGER } from '@x/core';
import { describe, expect, it } from 'vitest';
import { ChangeFeed } from '../../src/internal/change-feed.js';
import type { CommitPublication } from '../../src/protocol.js';

const commit = (seq: number): CommitPublication => ({
  seq,
  epoch: 1,
  writes: [{ method: 'm', requestId: `r${seq}`, sourceInstanceId: 's' }],
});

const w = (seq: number) => ({
  type: 'write' as const,
  seq,
  epoch: 1,
  method: 'm',
  requestId: `r${seq}`,
  sourceInstanceId: 's',
});

/** A feed of this process alone (no link to catch up over). */
const feed = () =>
  new ChangeFeed(
    SILENT_LOGGER,
    () => null,
    () => false,
  );

describe('ChangeFeed streams', () => {
  it('deliver in order, and replace an overflowing backlog by one gap', async () => {
    const f = feed();
    const s = f.open(3, undefined);
    f.onCommit(commit(1));
    f.onCommit(commit(2));
    expect((await s.next()).value).toEqual(w(1));
    f.onCommit(commit(3));
    f.onCommit(commit(4));
    f.onCommit(commit(5)); // buffer holds 2,3,4: overflow
    expect((await s.next()).value).toEqual({ type: 'gap', afterSeq: 1, toSeq: 5 });
    f.onCommit(commit(6));
    expect((await s.next()).value).toEqual(w(6));
    await s.return();
    expect((await s.next()).done).toBe(true);
  });

  it('deliver what is buffered, then finish, when the feed ends', async () => {
    const f = feed();
    const s = f.open(10, undefined);
    f.onCommit(commit(1));
    f.end();
    expect((await s.next()).value).toEqual(w(1));
    expect((await s.next()).done).toBe(true);
  });

  it('reject a pending next() with the abort reason', async () => {
    const ac = new AbortController();
    const s = feed().open(10, ac.signal);
    const p = s.next();
    const reason = new Error('stop');
    ac.abort(reason);
    await expect(p).rejects.toBe(reason);
  });

  it('reject at once with the reason of a signal aborted before they opened', async () => {
    const reason = new Error('before');
    const s = feed().open(10, AbortSignal.abort(reason));
    await expect(s.next()).rejects.toBe(reason);
  });

  it('reject every read with the error they were failed with', async () => {
    const f = feed();
    const s = f.open(10, undefined);
    f.onCommit(commit(1));
    const closed = new Error('closed');
    s.fail(closed);
    await expect(s.next()).rejects.toBe(closed);
    await expect(s.next()).rejects.toBe(closed);
  });
});
