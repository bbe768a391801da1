import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ChangeEvent, createDbProxy, type DbProxy, type RoleChange } from '../../src/index.js';
import { lockPathFor, tryAcquireElectionLock } from '../../src/internal/election.js';
import { collectChanges, nextPhase } from '../fixtures/events.js';
import { migrate, writes } from '../fixtures/writes.js';

/** Several proxies in one process still elect through the OS lock and talk over real ipc:// sockets. */
describe('proxy lifecycle, reads, changes and cancellation', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let proxies: DbProxy[];
  const make = (id: string, extra: Record<string, unknown> = {}): DbProxy => {
    const p = createDbProxy({
      databasePath: join(dir.path, 'l.db'),
      runtimeDir: join(dir.path, 'run'),
      instanceId: id,
      writes,
      migrate,
      ...extra,
    });
    proxies.push(p);
    return p;
  };

  beforeEach(async () => {
    dir = await tempDir('dbproxy-life');
    proxies = [];
  });
  afterEach(async () => {
    for (const p of proxies.reverse()) await p.close();
    await dir.cleanup();
  });

  it('elects exactly one primary among proxies started at once', async () => {
    const ps = Array.from({ length: 5 }, (_, i) => make(`p${i}`));
    await Promise.all(ps.map((p) => p.start()));
    expect(ps.filter((p) => p.role === 'primary')).toHaveLength(1);
    expect(ps.filter((p) => p.role === 'secondary')).toHaveLength(4);
  });

  it('reads its own writes by default, and another process waits for minSeq', async () => {
    const a = make('a');
    await a.start();
    const b = make('b');
    const c = make('c');
    await Promise.all([b.start(), c.start()]);
    const w = await b.write<{ rowid: number }>('insertNote', { id: 'ryw', writer: 'b' });
    expect(w.seq).toBeGreaterThan(0);
    expect(b.lastWriteSeq).toBe(w.seq);
    const n = await b.read((db) => db.prepare("SELECT count(*) AS n FROM notes WHERE id = 'ryw'").get());
    expect(n).toEqual({ n: 1 });
    // c never wrote; with the token (seq) from b it sees b's write
    const seen = await c.read((db) => db.prepare("SELECT writer FROM notes WHERE id = 'ryw'").get(), {
      minSeq: w.seq,
    });
    expect(seen).toEqual({ writer: 'b' });
    // a minSeq from the future times out with TIMEOUT
    const e = await c.read(() => 1, { minSeq: w.seq + 1000, timeoutMs: 50 }).catch((x) => x);
    expect(e).toMatchObject({ code: 'DBPROXY_TIMEOUT' });
  });

  it('publishes one change per committed write with its source, in seq order, on every process', async () => {
    const a = make('a');
    await a.start();
    const b = make('b');
    await b.start();
    const ac = new AbortController();
    const changes = collectChanges(b.changes({ signal: ac.signal }));
    // b is linked once its write is acked, and its stream is live once that commit reaches it
    await b.write('insertNote', { id: 'warm', writer: 'b' }, { requestId: 'req-warm' });
    await changes.until((s) => s.some((e) => e.type === 'write' && e.requestId === 'req-warm'));
    const from = changes.seen.length;
    await a.write('insertNote', { id: 'c1', writer: 'a' }, { requestId: 'req-c1' });
    await b.write('insertNote', { id: 'c2', writer: 'b' }, { requestId: 'req-c2' });
    await Promise.all([
      a.write('insertNote', { id: 'c3', writer: 'a' }, { requestId: 'req-c3' }),
      b.write('insertNote', { id: 'c4', writer: 'b' }, { requestId: 'req-c4' }),
    ]);
    await changes.until((s) => s.length >= from + 4);
    ac.abort();
    await changes.done;
    const seen = changes.seen.slice(from);
    expect(seen.map((e) => e.type)).toEqual(['write', 'write', 'write', 'write']);
    const writes_ = seen.filter((e) => e.type === 'write');
    expect(writes_.map((e) => e.requestId).sort()).toEqual(['req-c1', 'req-c2', 'req-c3', 'req-c4']);
    expect(writes_.find((e) => e.requestId === 'req-c1')).toMatchObject({
      sourceInstanceId: 'a',
      method: 'insertNote',
    });
    expect(writes_.find((e) => e.requestId === 'req-c2')).toMatchObject({ sourceInstanceId: 'b', epoch: 1 });
    for (let i = 1; i < writes_.length; i++)
      expect(writes_[i]!.seq).toBeGreaterThanOrEqual(writes_[i - 1]!.seq);
  });

  it('fetches the commits it missed while its link was down (catch-up by seq), without gaps or repeats', async () => {
    const a = make('a');
    await a.start();
    // b's watchdog is far shorter than a's heartbeat interval: its link keeps dropping and coming
    // back, and every publication sent while it is down must be fetched with db.changes.
    const b = make('b', { heartbeat: { intervalMs: 10, timeoutMs: 30 } });
    await b.start();
    await b.read(() => 0); // opened
    const ac = new AbortController();
    const changes = collectChanges(b.changes({ signal: ac.signal }));
    const ids = Array.from({ length: 40 }, (_, i) => `cu-${i}`);
    let lastSeq = 0;
    for (const [i, id] of ids.entries()) {
      lastSeq = (await a.write('insertNote', { id, writer: 'a' }, { requestId: id })).seq;
      if (i % 5 === 4 && i < ids.length - 1) {
        // a quiet spell: b's link drops (its watchdog fires; the awaited phase shows it did), and
        // the next writes land while it relinks
        await nextPhase('b', 'link-down');
      }
    }
    await changes.until((s) => s.some((e) => e.type === 'write' && e.seq >= lastSeq));
    ac.abort();
    await changes.done;
    const seen = changes.seen;
    expect(seen.filter((e) => e.type === 'gap')).toEqual([]);
    const got = seen.flatMap((e) =>
      e.type === 'write' && ids.includes(e.requestId ?? '') ? [e.requestId] : [],
    );
    expect(got).toEqual(ids);
    expect(b.metrics().retries).toBe(0); // b wrote nothing; only its subscription was repaired
  });

  it('reports what the primary no longer has as a gap: every commit is delivered or covered by a gap exactly once', async () => {
    const a = make('a', { changesBufferSize: 2 });
    await a.start();
    const b = make('b', { heartbeat: { intervalMs: 10, timeoutMs: 30 } });
    await b.start();
    const ac = new AbortController();
    const changes = collectChanges(b.changes({ signal: ac.signal }));
    let lastSeq = 0;
    for (let burst = 0; burst < 6; burst++) {
      for (let i = 0; i < 6; i++)
        lastSeq = (await a.write('insertNote', { id: `gp-${burst}-${i}`, writer: 'a' })).seq;
      // a quiet spell: b's link drops, and the next burst lands while it relinks
      if (burst < 5) await nextPhase('b', 'link-down');
    }
    await changes.until((s) => s.some((e) => (e.type === 'write' ? e.seq : e.toSeq) >= lastSeq));
    ac.abort();
    await changes.done;
    const seen = changes.seen;
    const covered = new Map<number, number>();
    for (const e of seen) {
      if (e.type === 'write') covered.set(e.seq, (covered.get(e.seq) ?? 0) + 1);
      else for (let q = e.afterSeq + 1; q <= e.toSeq; q++) covered.set(q, (covered.get(q) ?? 0) + 1);
    }
    for (let q = 1; q <= lastSeq; q++) expect(covered.get(q), `seq ${q}`).toBe(1);
    expect(seen.some((e) => e.type === 'gap')).toBe(true);
  });

  it('turns a consumer that falls behind into a gap event instead of unbounded buffering', async () => {
    const a = make('a', { changesBufferSize: 2 });
    await a.start();
    const it_ = a.changes()[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) await a.write('insertNote', { id: `g${i}`, writer: 'a' });
    const first = (await it_.next()).value as ChangeEvent;
    expect(first.type).toBe('gap');
    if (first.type === 'gap') expect(first.toSeq - first.afterSeq).toBeGreaterThanOrEqual(3);
    await it_.return?.();
  });

  it('hands over on close: the primary drains, says bye, a secondary promotes at the next epoch', async () => {
    const a = make('a');
    await a.start();
    const b = make('b');
    await b.start();
    const changes: RoleChange[] = [];
    b.onRoleChange((e) => changes.push(e));
    await b.write('insertNote', { id: 'before', writer: 'b' });
    const pending = b.write('insertNote', { id: 'during', writer: 'b' }, { requestId: 'during-1' });
    await a.close();
    await pending;
    const after = await b.write('insertNote', { id: 'after', writer: 'b' });
    expect(b.role).toBe('primary');
    expect(b.epoch).toBe(2);
    expect(changes.map((c) => c.role)).toContain('primary');
    const rows = await b.read(
      (db) => db.prepare("SELECT id FROM notes WHERE writer = 'b' ORDER BY rowid").all(),
      {
        minSeq: after.seq,
      },
    );
    expect(rows).toEqual([{ id: 'before' }, { id: 'during' }, { id: 'after' }]);
    expect(b.metrics()).toMatchObject({ role: 'primary', promotions: 1, failovers: 1 });
  });

  it('close is idempotent and later calls fail with DBPROXY_CLOSED', async () => {
    const a = make('a');
    await a.start();
    await Promise.all([a.close(), a.close()]);
    expect(a.role).toBe('closed');
    await expect(a.write('insertNote', { id: 'x', writer: 'a' })).rejects.toMatchObject({
      code: 'DBPROXY_CLOSED',
    });
    await expect(a.read(() => 1)).rejects.toMatchObject({ code: 'DBPROXY_CLOSED' });
    // the lock is free again
    const b = make('b');
    await b.start();
    expect(b.role).toBe('primary');
    expect(b.epoch).toBe(2);
  });

  it('honours an abort signal: before the call, and while waiting for a primary that does not exist', async () => {
    const a = make('a');
    await a.start();
    const reason = new Error('stop');
    await expect(
      a.write('insertNote', { id: 'x', writer: 'a' }, { signal: AbortSignal.abort(reason) }),
    ).rejects.toBe(reason);
    await a.close();
    // Someone holds the election but never announces itself (a primary stuck before binding): a
    // secondary's write waits for it; the abort ends the wait.
    const held = tryAcquireElectionLock(lockPathFor(join(dir.path, 'l.db')));
    expect(held).not.toBeNull();
    const c = make('c');
    try {
      await c.start();
      expect(c.role).toBe('secondary');
      const ac = new AbortController();
      const w = c.write('insertNote', { id: 'y', writer: 'c' }, { signal: ac.signal });
      // the write is under way (it waits for a primary), not refused up front
      expect(c.metrics().inFlight).toBe(1);
      ac.abort(reason);
      await expect(w).rejects.toBe(reason);
      expect(c.metrics().inFlight).toBe(0);
      const t = await c.write('insertNote', { id: 'z', writer: 'c' }, { timeoutMs: 100 }).catch((e) => e);
      expect(t).toMatchObject({ code: 'DBPROXY_UNREACHABLE', applied: 'no', retryable: true });
    } finally {
      held?.release();
    }
  });

  it('reports per-method metrics and validates options', async () => {
    const a = make('a');
    await a.start();
    await a.write('insertNote', { id: 'm1', writer: 'a' });
    await a.write('insertUnique', { k: 'k' });
    await a.write('insertUnique', { k: 'k' }).catch(() => {});
    const m = a.metrics();
    expect(m.methods['insertNote']).toMatchObject({ count: 1, ok: 1 });
    expect(m.methods['insertUnique']).toMatchObject({ count: 2, ok: 1, errors: { DBPROXY_CONFLICT: 1 } });
    expect(m.coordinator?.seq).toBeGreaterThan(0);
    expect(() => createDbProxy({ databasePath: '', writes } as never)).toThrowError(
      expect.objectContaining({ code: 'DBPROXY_INVALID_OPTIONS' }),
    );
    expect(Object.isFrozen(a.options)).toBe(true);
    expect(a.options.timeouts.defaultMs).toBe(5_000);
  });

  it('aborts a read waiting for a future seq with the signal reason', async () => {
    const a = make('a');
    await a.start();
    const ac = new AbortController();
    const reason = new Error('enough');
    let settled = false;
    const r = a.read(() => 1, { minSeq: 10_000, timeoutMs: 10_000, signal: ac.signal });
    r.then(
      () => (settled = true),
      () => (settled = true),
    );
    // a commit wakes the waiting read, which checks the sequence again and goes on waiting
    await a.write('insertNote', { id: 'r1', writer: 'a' });
    expect(settled).toBe(false);
    ac.abort(reason);
    await expect(r).rejects.toBe(reason);
    await expect(a.start({ signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  it('disposes with await using, and traces writes and role changes on diagnostics channels', async () => {
    const dc = await import('node:diagnostics_channel');
    const roles: unknown[] = [];
    const starts: unknown[] = [];
    const onRole = (m: unknown) => roles.push(m);
    const handlers = {
      start: (m: unknown) => starts.push(m),
      end() {},
      asyncStart() {},
      asyncEnd() {},
      error() {},
    };
    dc.subscribe('x:dbproxy:role', onRole);
    dc.tracingChannel('x:dbproxy:write').subscribe(handlers);
    try {
      {
        await using p = make('disposable');
        await p.write('insertNote', { id: 'dc', writer: 'd' }, { requestId: 'dc-1' });
        expect(p.role).toBe('primary');
      }
      expect(proxies.find((x) => x.instanceId === 'disposable')?.role).toBe('closed');
      expect(starts).toContainEqual(expect.objectContaining({ method: 'insertNote', requestId: 'dc-1' }));
      expect(roles).toContainEqual(expect.objectContaining({ role: 'primary', instanceId: 'disposable' }));
      expect(roles).toContainEqual(expect.objectContaining({ role: 'closed', instanceId: 'disposable' }));
    } finally {
      dc.unsubscribe('x:dbproxy:role', onRole);
      dc.tracingChannel('x:dbproxy:write').unsubscribe(handlers);
    }
  });
});
