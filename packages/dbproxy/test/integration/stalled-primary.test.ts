import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { ProxyChild } from '../fixtures/children.js';

/** Stall timeout of these tests (the README's default is 5 s). */
const STALL_MS = '1000';

/**
 * A primary that stops (SIGSTOP) keeps the OS lock but its lease goes silent: after the stall
 * timeout a secondary ends it and takes over, writes resume, every acknowledged write is in the file
 * exactly once, and the stopped process never commits again. A primary that is merely busy in a long
 * job keeps its lease beating (worker thread) and is not replaced.
 */
describe('a stalled primary', () => {
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
  const kids: ProxyChild[] = [];
  const spawn = (name: string, dbPath: string, rt: string): ProxyChild => {
    const c = new ProxyChild(name, dbPath, rt, { DBPROXY_STALL_MS: STALL_MS });
    kids.push(c);
    return c;
  };
  afterAll(async () => {
    for (const k of kids) {
      if (!k.exited) {
        k.handle.kill('SIGCONT');
        k.kill();
      }
    }
    await dir?.cleanup();
  });

  it('is ended and replaced under a storm; it commits nothing after SIGCONT; no acknowledged write lost or doubled', async () => {
    dir = await tempDir('dbproxy-stall');
    const dbPath = join(dir.path, 's.db');
    const rt = join(dir.path, 'run');
    const p = spawn('P', dbPath, rt);
    await p.waitFor((e) => e.event === 'started');
    const secondaries = [spawn('S1', dbPath, rt), spawn('S2', dbPath, rt)];
    for (const s of secondaries) await s.waitFor((e) => e.event === 'started');
    expect(await p.role()).toBe('primary');
    const all = [p, ...secondaries];
    const marks = all.map((c) => c.events.length);
    for (const c of all) c.send({ cmd: 'storm', count: 600, concurrency: 4, prefix: `st-${c.name}` });
    await Promise.all(all.map((c) => c.waitFor(() => c.acked.length >= 30, 30_000)));

    p.handle.kill('SIGSTOP');
    const promoted = await Promise.race(
      secondaries.map((s, i) =>
        s.waitFor((e) => e.event === 'role' && e['role'] === 'primary', 30_000, marks[i + 1]).then(() => s),
      ),
    );
    const exit = await p.handle.wait();
    expect(exit.signal).toBe('SIGKILL'); // ended by its successor: it can never commit again
    p.handle.kill('SIGCONT');

    const done = await Promise.all(
      secondaries.map((s, i) => s.waitFor((e) => e.event === 'storm-done', 60_000, marks[i + 1])),
    );
    for (const d of done) expect(d['failed']).toEqual([]);
    const db = new Database(dbPath, { readonly: true });
    try {
      const counts = new Map(
        (
          db.prepare("SELECT id, count(*) AS n FROM notes WHERE id LIKE 'st-%' GROUP BY id").all() as Array<{
            id: string;
            n: number;
          }>
        ).map((r) => [r.id, r.n]),
      );
      for (const s of secondaries)
        expect(s.acked.filter((id) => id.startsWith(`st-${s.name}-`))).toHaveLength(600);
      for (const c of all) for (const id of c.acked) expect(counts.get(id), id).toBe(1);
      const meta = new Map(
        (db.prepare('SELECT key, value FROM _x_wc_meta').all() as Array<{ key: string; value: number }>).map(
          (r) => [r.key, r.value],
        ),
      );
      expect(meta.get('fence')).toBe(2); // the successor's epoch fences the stopped one off
    } finally {
      db.close();
    }
    const from = promoted.events.length;
    promoted.send({ cmd: 'metrics', tag: 'm' });
    const m = await promoted.waitFor((e) => e.event === 'metrics', 10_000, from);
    expect((m['metrics'] as { epoch: number }).epoch).toBe(2);
    const ended = await Promise.all(
      secondaries.map(async (s) => {
        const f = s.events.length;
        s.send({ cmd: 'metrics', tag: 'm' });
        const x = await s.waitFor((e) => e.event === 'metrics', 10_000, f);
        return (x['metrics'] as { stalledPrimariesEnded: number }).stalledPrimariesEnded;
      }),
    );
    expect(ended.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(1);
    for (const s of secondaries) await s.exit();
  });

  it('is not replaced while merely busy in a long job: its lease keeps beating', async () => {
    dir ??= await tempDir('dbproxy-stall');
    const dbPath = join(dir.path, 'busy.db');
    const rt = join(dir.path, 'run-busy');
    const p = spawn('P', dbPath, rt);
    await p.waitFor((e) => e.event === 'started');
    const s = spawn('S', dbPath, rt);
    await s.waitFor((e) => e.event === 'started');
    const from = s.events.length;
    // one job holding the primary's only thread for three stall timeouts
    s.send({
      cmd: 'write',
      method: 'slowInsert',
      params: { id: 'busy', ms: 3 * Number(STALL_MS) },
      tag: 'busy',
    });
    s.send({ cmd: 'write', method: 'insertNote', params: { id: 'after', writer: 'S' }, tag: 'after' });
    expect((await s.waitFor((e) => e['tag'] === 'busy', 30_000, from)).event).toBe('write-ok');
    expect((await s.waitFor((e) => e['tag'] === 'after', 30_000, from)).event).toBe('write-ok');
    expect(p.exited).toBe(false);
    expect(await p.role()).toBe('primary');
    expect(await s.role()).toBe('secondary');
    await s.exit();
    await p.exit();
  });
});
