import { randomUUID } from 'node:crypto';
import type { AppliedEvent } from '@x/oversync/client';
import { describe, expect, it } from 'vitest';
import type { Device, DeviceOptions } from '../helpers/device.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('bg', { watch: true, heartbeatIntervalMs: 200 });
const { attached } = suite;

function visible(d: Device, id: string): boolean {
  return d.db.prepare(`SELECT 1 FROM users WHERE id = ?`).get(id) !== undefined;
}

/** Resolves on the first `applied` event after which `done()` holds; rejects after `deadlineMs`. */
function appliedUntil(d: Device, what: string, done: (e: AppliedEvent) => boolean, deadlineMs: number) {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${what} on ${d.name}: not within ${deadlineMs} ms`));
    }, deadlineMs);
    const off = d.client.on('applied', (e) => {
      if (done(e)) {
        clearTimeout(timer);
        off();
        resolve();
      }
    });
  });
}

/** Resolves once a pull or snapshot has made row `id` visible on `d`. */
function waitVisible(d: Device, id: string, deadlineMs: number): Promise<void> {
  return appliedUntil(d, `row ${id} visible`, () => visible(d, id), deadlineMs);
}

/** Commits a row on `from`, pushes it and waits until it reaches `to` (no pull of the test's). */
async function deliver(from: Device, to: Device, name: string, deadlineMs = 10_000): Promise<void> {
  const id = randomUUID();
  from.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(id, name);
  const seen = waitVisible(to, id, deadlineMs);
  await from.client.pushPending();
  await seen;
}

/**
 * Resolves once `d`'s background downloader holds the watch stream open: two rows committed on
 * `from` reach `d` without a pull of the test's. The first may come by the downloader's first
 * pull; the second only by the stream (the fallback poll is 60 s away).
 */
async function watchOpen(from: Device, d: Device): Promise<void> {
  for (let i = 0; i < 2; i++) await deliver(from, d, 'warm-up');
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
    // b's uploader commits the row; b then replays its own bundle (an `applied` event of kind replay)
    const uploaded = appliedUntil(b, 'the upload of b', (e) => e.kind === 'replay', 10_000);
    b.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'from b')`).run(fromB);
    await uploaded;
    expect(visible(a, fromB)).toBe(false);
    await a.client.pullToStable();
    expect(visible(a, fromB)).toBe(true);
    await b.client.stop();
  });

  it('wakes on the server watch stream instead of waiting for the fallback poll', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user, { watch: { mode: 'auto', fallbackIntervalMs: 60_000 } });
    b.client.start();
    // commit on another device several times: with the fallback poll 60 s away, each row can only
    // reach b within the deadline by the downloader's first pull or the watch stream
    for (let i = 0; i < 3; i++) await deliver(a, b, 'live');
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
      await watchOpen(a, b);
      await s1.stop();
      s2 = await startTestServer({
        database: { url: s1.dbUrl },
        port,
        watch: true,
        heartbeatIntervalMs: 200,
      });
      await deliver(a, b, 'after restart', 15_000);
      await b.client.stop();
    } finally {
      await s2?.close();
      await s1.close();
    }
  });
});
