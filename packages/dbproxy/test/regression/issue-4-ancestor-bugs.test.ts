import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDbProxy, type DbProxy } from '../../src/index.js';
import { recordPhases } from '../fixtures/events.js';
import { migrate, writes } from '../fixtures/writes.js';

/** Regressions for the Go ancestor's IPC bugs listed in issue 4's design note. */
describe('issue 4: ancestor bugs stay fixed', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  const proxies: DbProxy[] = [];
  const make = (id: string, over: Record<string, unknown> = {}): DbProxy => {
    const p = createDbProxy({
      databasePath: join(dir.path, 'r.db'),
      runtimeDir: join(dir.path, 'run'),
      instanceId: id,
      writes,
      migrate,
      ...over,
    });
    proxies.push(p);
    return p;
  };
  beforeEach(async () => {
    dir = await tempDir('dbproxy-regr');
  });
  afterEach(async () => {
    for (const p of proxies.splice(0).reverse()) await p.close();
    await dir.cleanup();
  });

  it('an unreadable info file never makes a second primary (the ancestor continued as primary)', async () => {
    const a = make('a');
    await a.start();
    writeFileSync(join(dir.path, 'r.db-dbproxy.json'), '{ truncated');
    const recorded = recordPhases();
    try {
      const b = make('b');
      await b.start();
      expect(b.role).toBe('secondary');
      // b's write waits rather than writing the file itself; it times out, not applied
      const e = await b.write('insertNote', { id: 'x', writer: 'b' }, { timeoutMs: 200 }).catch((x) => x);
      expect(e).toMatchObject({ code: 'DBPROXY_UNREACHABLE', applied: 'no' });
      // and through its start and that whole wait, b never took a step towards primary
      const promotion = ['lock-acquired', 'database-open', 'coordinator-open', 'bound', 'announced'];
      expect(recorded.phases.filter((p) => p.instanceId === 'b' && promotion.includes(p.phase))).toEqual([]);
      expect(b.role).toBe('secondary');
      expect(a.role).toBe('primary');
    } finally {
      recorded.stop();
    }
  });

  it("the primary's own writes are serialised and published like forwarded ones", async () => {
    const a = make('a');
    await a.start();
    const it_ = a.changes()[Symbol.asyncIterator]();
    const r = await a.write('insertNote', { id: 'own', writer: 'a' }, { requestId: 'own-1' });
    const e = (await it_.next()).value;
    expect(e).toMatchObject({
      type: 'write',
      seq: r.seq,
      requestId: 'own-1',
      sourceInstanceId: 'a',
      method: 'insertNote',
    });
    await it_.return?.();
  });

  it('one requestId across retries: a replayed create is not a CONFLICT and not applied twice', async () => {
    const a = make('a');
    await a.start();
    const b = make('b');
    const first = await b.write('insertUnique', { k: 'once' }, { requestId: 'create-1' });
    const again = await b.write('insertUnique', { k: 'once' }, { requestId: 'create-1' });
    expect(first.replayed).toBe(false);
    expect(again).toEqual({ ...first, replayed: true });
  });

  it('shutdown drains queued writes instead of dropping them', async () => {
    const a = make('a');
    await a.start();
    const pending = Array.from({ length: 50 }, (_, i) => a.write('insertNote', { id: `d${i}`, writer: 'a' }));
    await a.close();
    const results = await Promise.allSettled(pending);
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true);
  });

  it('processes given different runtime dirs still find one primary (the info file sits beside the database)', async () => {
    const a = make('a', { runtimeDir: join(dir.path, 'run-a') });
    await a.start();
    const b = make('b', { runtimeDir: join(dir.path, 'run-b') });
    await b.start();
    expect(b.role).toBe('secondary');
    const r = await b.write('insertNote', { id: 'cross', writer: 'b' });
    expect(r.replayed).toBe(false);
  });
});
