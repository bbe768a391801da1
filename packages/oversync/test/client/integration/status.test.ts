import { randomUUID } from 'node:crypto';
import type { ClientStatus, SyncClient } from '@x/oversync/client';
import { describe, expect, it } from 'vitest';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('status');
const { attached } = suite;

/** Resolves with `client.status` once `pred` holds (now or at a later `status` event). */
function until(client: SyncClient, what: string, pred: (s: ClientStatus) => boolean, ms = 20_000) {
  return new Promise<ClientStatus>((resolve, reject) => {
    if (pred(client.status)) {
      resolve(client.status);
      return;
    }
    const timer = setTimeout(() => {
      off();
      reject(new Error(`status ${what}: not within ${ms} ms (now ${JSON.stringify(client.status)})`));
    }, ms);
    const off = client.on('status', (s) => {
      if (pred(s)) {
        clearTimeout(timer);
        off();
        resolve(s);
      }
    });
  });
}

type Phase = 'offline' | 'pending' | 'uploading' | 'synced' | 'other';

function phase(s: ClientStatus): Phase {
  if (s.uploading) return 'uploading';
  if (!s.connected) return s.pendingChanges > 0 ? 'pending' : 'offline';
  if (s.pendingChanges === 0 && s.lastError === null && s.lastPushAt !== null) return 'synced';
  return 'other';
}

describe('client.status', () => {
  it('moves through offline → pending → uploading → synced with a real server', async () => {
    const d = await attached(`u-${randomUUID()}`, {
      uploadIntervalMs: 60_000,
      backoffMinMs: 50,
      backoffMaxMs: 100,
    });
    const status = d.client.status;
    expect(status).toMatchObject({ connected: true, uploading: false, pendingChanges: 0, lastError: null });
    const phases: Phase[] = [];
    const seenObjects = new Set<ClientStatus>();
    d.client.on('status', (s) => {
      seenObjects.add(s);
      const p = phase(s);
      if (phases.at(-1) !== p) phases.push(p);
    });

    d.offline = true;
    d.client.start();
    // the background downloader's pull fails at the network edge
    const offline = await until(d.client, 'offline', (s) => !s.connected && s.lastError !== null);
    expect(offline.lastError).toMatchObject({ operation: 'pull' });
    expect(['OVERSYNC_CLIENT_NETWORK', 'OVERSYNC_CLIENT_RETRY_EXHAUSTED']).toContain(offline.lastError?.code);

    // a local write is counted at once, with no call of the app's
    d.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'offline edit')`).run(randomUUID());
    await until(d.client, 'pending', (s) => s.pendingChanges === 1);

    d.offline = false;
    d.client.notifyLocalChange();
    const synced = await until(d.client, 'synced', (s) => phase(s) === 'synced');
    expect(synced).toMatchObject({ connected: true, uploading: false, pendingChanges: 0, lastError: null });
    expect(synced.lastPushAt).toBeInstanceOf(Date);

    const order: Phase[] = ['offline', 'pending', 'uploading', 'synced'];
    const seen = phases.filter((p) => order.includes(p));
    // each phase appears, in this order (phases may repeat, e.g. a retried pull while offline)
    const firsts = order.map((p) => seen.indexOf(p));
    expect(firsts.every((i) => i >= 0)).toBe(true);
    expect([...firsts].sort((a, b) => a - b)).toEqual(firsts);
    // one object, updated in place
    expect([...seenObjects]).toEqual([status]);
    expect(d.client.status).toBe(status);
    expect((await suite.serverUsers(d.user)).map((u) => u.name)).toEqual(['offline edit']);
    await d.client.stop();
  });

  it('reports downloads and the last pull, and clears on close', async () => {
    const user = `u-${randomUUID()}`;
    const a = await attached(user);
    const b = await attached(user);
    const downloading: boolean[] = [];
    b.client.on('status', (s) => downloading.push(s.downloading));
    a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'from a')`).run(randomUUID());
    await a.client.sync();
    // b's attach hydrated from the scope's snapshot: that was its first pull
    const hydratedAt = b.client.status.lastPullAt;
    expect(hydratedAt).toBeInstanceOf(Date);
    await b.client.pullToStable();
    expect(downloading).toContain(true);
    expect(b.client.status).toMatchObject({ downloading: false, connected: true, lastError: null });
    expect(b.client.status.lastPullAt).not.toBe(hydratedAt);
    await b.client.close();
    expect(b.client.status.connected).toBe(false);
  });

  it('counts pending changes through detach-blocking rows, and the readStatus() read agrees', async () => {
    const d = await attached(`u-${randomUUID()}`);
    for (let i = 0; i < 3; i++)
      d.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `n${i}`);
    await until(d.client, 'three pending', (s) => s.pendingChanges === 3);
    expect((await d.client.readStatus()).pending.dirtyRows).toBe(3);
    await d.client.sync();
    await until(d.client, 'nothing pending', (s) => s.pendingChanges === 0);
  });
});
