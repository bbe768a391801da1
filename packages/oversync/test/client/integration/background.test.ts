import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Device, DeviceOptions } from '../helpers/device.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('bg', { watch: true, heartbeatIntervalMs: 200 });
const { attached } = suite;

function visible(d: Device, id: string): boolean {
  return d.db.prepare(`SELECT 1 FROM users WHERE id = ?`).get(id) !== undefined;
}

function waitVisible(d: Device, id: string, timeoutMs: number): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`row not visible on ${d.name} after ${timeoutMs} ms`));
    }, timeoutMs);
    const off = d.client.on('applied', () => {
      if (visible(d, id)) {
        clearTimeout(timer);
        off();
        resolve(performance.now() - start);
      }
    });
  });
}

describe('background sync', () => {
  it('uploads local writes and pulls remote ones without explicit calls (polling)', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user, { uploadIntervalMs: 50, watch: { mode: 'off', fallbackIntervalMs: 100 } });
    b.client.start();
    const fromA = randomUUID();
    a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'from a')`).run(fromA);
    const seen = waitVisible(b, fromA, 10_000);
    await a.client.sync();
    await seen;
    const fromB = randomUUID();
    b.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'from b')`).run(fromB);
    for (let i = 0; i < 200 && !visible(a, fromB); i++) {
      await new Promise((r) => setTimeout(r, 50));
      await a.client.pullToStable();
    }
    expect(visible(a, fromB)).toBe(true);
    await b.client.stop();
  });

  it('wakes on the server watch stream instead of waiting for the fallback poll', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user, { watch: { mode: 'auto', fallbackIntervalMs: 60_000 } });
    b.client.start();
    // let the watcher connect, then commit on another device several times
    await new Promise((r) => setTimeout(r, 300));
    for (let i = 0; i < 3; i++) {
      const id = randomUUID();
      a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'live')`).run(id);
      const seen = waitVisible(b, id, 10_000);
      await a.client.pushPending();
      expect(await seen).toBeLessThan(10_000);
    }
    await b.client.stop();
  });

  it('changes() yields applied events until aborted', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user);
    const ac = new AbortController();
    const seen: string[] = [];
    const consumer = (async () => {
      for await (const e of b.client.changes({ signal: ac.signal })) {
        seen.push(`${e.kind}:${e.tables.join(',')}`);
        if (e.kind === 'pull') ac.abort();
      }
    })();
    a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'x')`).run(randomUUID());
    await a.client.sync();
    await b.client.pullToStable();
    await consumer;
    expect(seen).toEqual(['pull:users']);
  });

  it('keeps waking after the server restarts (the watch stream reconnects)', async () => {
    const s1 = await startTestServer({ watch: true, heartbeatIntervalMs: 200 });
    const port = Number(new URL(s1.baseUrl).port);
    let s2: TestServer | undefined;
    try {
      const user = `u-${randomUUID()}`;
      const open = (opts: DeviceOptions) => attached(user, opts, undefined, s1.baseUrl);
      const a = await open({});
      const b = await open({
        backoffMinMs: 50,
        backoffMaxMs: 200,
        watch: { mode: 'auto', fallbackIntervalMs: 60_000 },
      });
      b.client.start();
      await new Promise((r) => setTimeout(r, 300));
      await s1.stop();
      s2 = await startTestServer({
        database: { url: s1.dbUrl },
        port,
        watch: true,
        heartbeatIntervalMs: 200,
      });
      const id = randomUUID();
      a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'after restart')`).run(id);
      const seen = waitVisible(b, id, 15_000);
      await a.client.pushPending();
      expect(await seen).toBeLessThan(15_000);
      await b.client.stop();
    } finally {
      await s2?.close();
      await s1.close();
    }
  });
});
