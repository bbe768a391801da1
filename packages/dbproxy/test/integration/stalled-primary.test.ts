import { join } from 'node:path';
import { tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { ProxyChild } from '../fixtures/children.js';

/**
 * A primary that stops answering (SIGSTOP) but still holds the lock: the heartbeat timeout takes the
 * secondary's link down, nobody may promote (the lock is still held), writes wait, and once the
 * primary resumes the re-sent writes are applied exactly once.
 */
describe('a stalled primary', () => {
  let dir: Awaited<ReturnType<typeof tempDir>> | undefined;
  const kids: ProxyChild[] = [];
  afterAll(async () => {
    for (const k of kids) {
      if (!k.exited) {
        k.handle.kill('SIGCONT');
        k.kill();
      }
    }
    await dir?.cleanup();
  });

  it('makes writes wait, never elects a second primary, and applies them once when it resumes', async () => {
    dir = await tempDir('dbproxy-stall');
    const dbPath = join(dir.path, 's.db');
    const rt = join(dir.path, 'run');
    const p = new ProxyChild('P', dbPath, rt);
    kids.push(p);
    await p.waitFor((e) => e.event === 'started');
    const s = new ProxyChild('S', dbPath, rt);
    kids.push(s);
    await s.waitFor((e) => e.event === 'started');
    s.send({ cmd: 'write', method: 'insertNote', params: { id: 'warm', writer: 'S' }, tag: 'warm' });
    await s.waitFor((e) => e.event === 'write-ok' && e['tag'] === 'warm');

    p.handle.kill('SIGSTOP');
    const from = s.events.length;
    for (let i = 0; i < 5; i++) {
      s.send({
        cmd: 'write',
        method: 'insertNote',
        params: { id: `stall-${i}`, writer: 'S' },
        tag: `st${i}`,
      });
    }
    await new Promise((r) => setTimeout(r, 1_800)); // past the heartbeat timeout
    expect(s.events.slice(from).filter((e) => e.event.startsWith('write-'))).toEqual([]);
    expect(await s.role()).toBe('secondary'); // the stopped primary still holds the lock
    p.handle.kill('SIGCONT');
    for (let i = 0; i < 5; i++) {
      const r = await s.waitFor((e) => e['tag'] === `st${i}`, 20_000, from);
      expect(r.event).toBe('write-ok');
    }
    const db = new Database(dbPath, { readonly: true });
    try {
      const rows = db
        .prepare("SELECT id, count(*) AS n FROM notes WHERE id LIKE 'stall-%' GROUP BY id")
        .all();
      expect(rows).toEqual(Array.from({ length: 5 }, (_, i) => ({ id: `stall-${i}`, n: 1 })));
    } finally {
      db.close();
    }
    const m = s.events.length;
    s.send({ cmd: 'metrics', tag: 'm' });
    const metrics = (await s.waitFor((e) => e.event === 'metrics', 10_000, m))['metrics'] as {
      retries: number;
    };
    expect(metrics.retries).toBeGreaterThanOrEqual(5); // the link went down and the writes were re-sent
    await s.exit();
    await p.exit();
  });
});
