import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxyChild } from '../fixtures/children.js';
import { noteCountsById } from '../fixtures/rows.js';

/**
 * One primary and three secondaries, each a real process, share one SQLite file. They write
 * concurrently; then the primary is SIGKILLed mid-storm. Every acknowledged write must be in the
 * file exactly once (notes.id is not unique, so a duplicate would show), one secondary must
 * promote, and the writes must resume.
 */
describe('storm and failover across processes', () => {
  let dir: Awaited<ReturnType<typeof tempDir>>;
  let dbPath: string;
  let runtimeDir: string;
  let primary: ProxyChild;
  let secondaries: ProxyChild[];

  const countsById = (): Map<string, number> => noteCountsById(dbPath);

  beforeAll(async () => {
    dir = await tempDir('dbproxy-storm');
    dbPath = join(dir.path, 'shared.db');
    runtimeDir = join(dir.path, 'run');
    primary = new ProxyChild('P', dbPath, runtimeDir);
    await primary.waitFor((e) => e.event === 'started');
    expect(await primary.role()).toBe('primary');
    secondaries = ['S1', 'S2', 'S3'].map((n) => new ProxyChild(n, dbPath, runtimeDir));
    for (const s of secondaries) await s.waitFor((e) => e.event === 'started');
    for (const s of secondaries) expect(await s.role()).toBe('secondary');
  });

  afterAll(async () => {
    for (const c of [primary, ...secondaries]) if (c !== undefined && !c.exited) c.kill();
    await dir?.cleanup();
  });

  it('applies every concurrent write from four processes exactly once', async () => {
    const all = [primary, ...secondaries];
    const marks = all.map((c) => c.events.length);
    for (const c of all) c.send({ cmd: 'storm', count: 150, concurrency: 8, prefix: `a-${c.name}` });
    const done = await Promise.all(
      all.map((c, i) => c.waitFor((e) => e.event === 'storm-done', 60_000, marks[i])),
    );
    for (const d of done) expect(d['failed']).toEqual([]);
    const counts = countsById();
    for (const c of all) {
      const mine = c.acked.filter((id) => id.startsWith(`a-${c.name}-`));
      expect(mine).toHaveLength(150);
      for (const id of mine) expect(counts.get(id), id).toBe(1);
    }
    expect([...counts.keys()].filter((k) => k.startsWith('a-'))).toHaveLength(600);
  });

  it('survives SIGKILL of the primary mid-storm: nothing acknowledged lost, nothing duplicated', async () => {
    const marks = secondaries.map((c) => c.events.length);
    const ackedBefore = secondaries.map((c) => c.acked.length);
    for (const s of secondaries) s.send({ cmd: 'storm', count: 400, concurrency: 8, prefix: `b-${s.name}` });
    // Let the storm get going on every secondary, then kill the primary.
    await Promise.all(
      secondaries.map((s, i) =>
        s.waitFor(() => s.acked.length >= ackedBefore[i]! + 40, 30_000, marks[i]).catch(() => undefined),
      ),
    );
    await Promise.all(
      secondaries.map((s, i) => s.waitFor(() => s.acked.length >= ackedBefore[i]! + 40, 30_000)),
    );
    const killedAt = Date.now();
    primary.kill();
    await primary.handle.wait();

    const promoted = await Promise.race(
      secondaries.map((s, i) =>
        s.waitFor((e) => e.event === 'role' && e['role'] === 'primary', 20_000, marks[i]).then(() => s),
      ),
    );
    const promoteMs = Date.now() - killedAt;
    console.log(`failover: ${promoted.name} promoted ${promoteMs} ms after SIGKILL`);

    const done = await Promise.all(
      secondaries.map((s, i) => s.waitFor((e) => e.event === 'storm-done', 60_000, marks[i])),
    );
    // Writes issued during the gap waited for the new primary instead of failing.
    for (const d of done) expect(d['failed']).toEqual([]);

    const counts = countsById();
    for (const s of secondaries) {
      const mine = s.acked.filter((id) => id.startsWith(`b-${s.name}-`));
      expect(mine).toHaveLength(400);
      for (const id of mine) expect(counts.get(id), id).toBe(1);
    }
    // Earlier storm untouched by the failover.
    expect([...counts.entries()].filter(([k, n]) => k.startsWith('a-') && n === 1)).toHaveLength(600);
    // Exactly one of the secondaries is primary now, at the next epoch.
    const roles = await Promise.all(secondaries.map((s) => s.role()));
    expect(roles.filter((r) => r === 'primary')).toHaveLength(1);
    const promotedRole = promoted.events.find((e) => e.event === 'role' && e['role'] === 'primary');
    expect(promotedRole?.['epoch']).toBe(2);
    const metrics = done.map((d) => d['metrics'] as { retries: number; failovers: number });
    console.log(`failover: retries per secondary ${metrics.map((m) => m.retries).join(', ')}`);
    expect(metrics.every((m) => m.failovers >= 1)).toBe(true);
  });

  it('keeps serving after the failover, and a newcomer joins as a secondary', async () => {
    const late = new ProxyChild('L', dbPath, runtimeDir);
    try {
      await late.waitFor((e) => e.event === 'started');
      expect(await late.role()).toBe('secondary');
      const from = late.events.length;
      late.send({ cmd: 'write', method: 'insertNote', params: { id: 'late-1', writer: 'L' }, tag: 'w' });
      const r = await late.waitFor((e) => e.event === 'write-ok' || e.event === 'write-err', 20_000, from);
      expect(r.event).toBe('write-ok');
      expect(countsById().get('late-1')).toBe(1);
    } finally {
      await late.exit();
    }
  });

  it('fails over again: the promoted primary is killed mid-storm too, and every acknowledged write survives once', async () => {
    const roles = await Promise.all(secondaries.map(async (c) => [c, await c.role()] as const));
    const current = roles.find(([, r]) => r === 'primary')![0];
    const others = secondaries.filter((c) => c !== current);
    const newcomer = new ProxyChild('N', dbPath, runtimeDir);
    secondaries.push(newcomer);
    await newcomer.waitFor((e) => e.event === 'started');
    const writers = [current, ...others, newcomer];
    const marks = writers.map((c) => c.events.length);
    const ackedBefore = writers.map((c) => c.acked.length);
    for (const c of writers) c.send({ cmd: 'storm', count: 300, concurrency: 8, prefix: `c-${c.name}` });
    await Promise.all(writers.map((c, i) => c.waitFor(() => c.acked.length >= ackedBefore[i]! + 30, 30_000)));
    current.kill();
    await current.handle.wait();
    const survivors = [...others, newcomer];
    const done = await Promise.all(
      survivors.map((c) => c.waitFor((e) => e.event === 'storm-done', 60_000, marks[writers.indexOf(c)])),
    );
    for (const d of done) expect(d['failed']).toEqual([]);
    const counts = countsById();
    for (const c of writers) {
      const mine = c.acked.filter((id) => id.startsWith(`c-${c.name}-`));
      if (c !== current) expect(mine).toHaveLength(300);
      for (const id of mine) expect(counts.get(id), id).toBe(1); // the killed primary's acks too
    }
    const live = await Promise.all(survivors.map((c) => c.role()));
    expect(live.filter((r) => r === 'primary')).toHaveLength(1);
    const promoted = survivors[live.indexOf('primary')]!;
    const lastPromotion = promoted.events.filter((e) => e.event === 'role' && e['role'] === 'primary').at(-1);
    expect(lastPromotion?.['epoch']).toBe(3);
  });
});
