import { randomUUID } from 'node:crypto';
import type { ProgressEvent } from '@x/oversync/client';
import { describe, expect, it, vi } from 'vitest';
import { WorkerConnection } from '../../../src/client/internal/apply-worker.js';
import { LONG_WORK_ROWS } from '../../../src/client/internal/writer.js';
import { type Device, snapshot } from '../helpers/device.js';
import { deviceSuite } from '../helpers/suite.js';

// The stage-free hydrate (a database file in WAL mode): one transaction on the apply connection
// takes the pages as they arrive; the app's connection reads the previous state until COMMIT, and
// a bad page rolls the whole swap back.

const suite = deviceSuite('h');

function count(d: Device, table: string): number {
  return Number(d.db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get());
}

/** The database's triggers (the client's capture triggers are dropped during a swap and restored with it). */
function triggers(d: Device): unknown[] {
  return d.db.prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name`).all();
}

function addUsers(d: Device, n: number, tag: string): void {
  d.db.transaction(() => {
    for (let i = 0; i < n; i++)
      d.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(randomUUID(), `${tag} ${i}`);
  })();
}

/** A seeded user and a second device of it with that state; then the server gets `more` rows. */
async function deviceBehind(rows: number, more: number, opts: Parameters<typeof suite.attached>[1] = {}) {
  const user = `u-${randomUUID()}`;
  const seed = await suite.attached(user);
  addUsers(seed, rows, 'seed');
  await seed.client.sync();
  const d = await suite.attached(user, { snapshotChunkRows: 100, ...opts });
  expect(count(d, 'users')).toBe(rows);
  const previous = snapshot(d.db);
  addUsers(seed, more, 'later');
  seed.db.prepare(`UPDATE users SET name = 'changed' WHERE rowid = 1`).run();
  await seed.client.sync();
  return { user, seed, d, previous };
}

describe('stage-free hydrate', () => {
  it("the app's connection reads the previous state during the swap and the new one after", async () => {
    const seen: Array<{ stage: string; done: number; users: number; staged: number }> = [];
    let device: Device | undefined;
    const { seed, d, previous } = await deviceBehind(1200, 300, {
      onProgress: (e: ProgressEvent) => {
        if (!device || e.phase !== 'hydrate') return;
        seen.push({
          stage: e.stage ?? '',
          done: e.done,
          users: count(device, 'users'),
          staged: count(device, '_sync_snapshot_stage'),
        });
      },
    });
    device = d;
    const report = await d.client.rebuild();
    expect(report).toMatchObject({ outcome: 'applied_snapshot', restore: { rowCount: 1500 } });
    const mid = seen.filter((s) => s.stage === 'apply' && s.done > 0 && s.done < 1500);
    expect(mid.length).toBeGreaterThan(5);
    // every page was applied inside the open transaction: the app saw the 1,200 rows of before,
    // and nothing was ever committed to the stage (the staged path commits each page there)
    for (const s of seen) expect(s).toMatchObject({ users: 1200, staged: 0 });
    expect(snapshot(d.db)).not.toEqual(previous);
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
    expect(count(d, '_sync_row_state')).toBe(1500);
    expect(await d.client.pendingStatus()).toMatchObject({ total: 0 });
  });

  it('a hydrate of more than LONG_WORK_ROWS rows runs its pages in the worker: the app reads the old state meanwhile', async () => {
    const user = `u-${randomUUID()}`;
    // The seed's push is long too: its replay runs in the worker, its pages' live rows read in one
    // call each (replay.ts pageLiveRows). One row is edited while the chunks upload: the replay
    // must find it changed since the freeze and queue it again, and leave every other row clean.
    let seeding: Device | undefined;
    let edited = false;
    const seed = await suite.attached(user, {
      onProgress: (e: ProgressEvent) => {
        if (!seeding || edited || e.phase !== 'push' || e.stage !== 'upload') return;
        edited = true;
        seeding.db.prepare(`UPDATE users SET name = 'edited during the push' WHERE rowid = 7`).run();
      },
    });
    seeding = seed;
    const total = LONG_WORK_ROWS + 500;
    addUsers(seed, total, 'seed');
    const lookups = vi.spyOn(WorkerConnection.prototype, 'getMany');
    try {
      await seed.client.pushPending();
      expect(lookups.mock.calls.length).toBeGreaterThanOrEqual(Math.ceil(total / 500));
    } finally {
      lookups.mockRestore();
    }
    expect(edited).toBe(true);
    expect(await seed.client.pendingStatus()).toMatchObject({ total: 1 });
    expect(count(seed, '_sync_row_state')).toBe(total);
    await seed.client.sync();
    expect(await seed.client.pendingStatus()).toMatchObject({ total: 0 });
    const seen: Array<{ users: number; staged: number }> = [];
    let device: Device | undefined;
    const d = suite.device(user, {
      onProgress: (e: ProgressEvent) => {
        if (!device || e.phase !== 'hydrate' || e.stage !== 'apply' || e.done === 0 || e.done === e.total)
          return;
        seen.push({ users: count(device, 'users'), staged: count(device, '_sync_snapshot_stage') });
      },
    });
    device = d;
    const inWorker = vi.spyOn(WorkerConnection.prototype, 'runAsync');
    try {
      await d.client.open();
      expect(await d.client.attach(user)).toMatchObject({
        outcome: 'used_remote_state',
        restore: { rowCount: total },
      });
      // the pages' statements ran in the worker (one request per batch of up to 2,500 rows of a table)
      expect(inWorker.mock.calls.length).toBeGreaterThanOrEqual(Math.ceil(total / 2500));
    } finally {
      inWorker.mockRestore();
    }
    expect(seen.length).toBeGreaterThan(5);
    for (const s of seen) expect(s).toEqual({ users: 0, staged: 0 });
    expect(count(d, 'users')).toBe(total);
    expect(count(d, '_sync_row_state')).toBe(total);
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
    expect(
      d.db.prepare(`SELECT count(*) FROM users WHERE name = 'edited during the push'`).pluck().get(),
    ).toBe(1);
  }, 240_000);

  it('an app write during the swap waits for it and is kept as a local intent', async () => {
    let device: Device | undefined;
    let write: Promise<unknown> | undefined;
    const id = randomUUID();
    const { seed, d } = await deviceBehind(600, 600, {
      onProgress: (e: ProgressEvent) => {
        if (!device || write || e.phase !== 'hydrate' || e.stage !== 'apply' || e.done === 0) return;
        const dev = device;
        write = dev.client.writeTransaction((db) => {
          db.prepare(`INSERT INTO users(id, name) VALUES (?, 'written during the hydrate')`).run(id);
        });
      },
    });
    device = d;
    await d.client.rebuild();
    await write;
    expect(count(d, 'users')).toBe(1201);
    expect(await d.client.pendingStatus()).toMatchObject({ dirtyRows: 1 });
    await d.client.sync();
    await seed.client.sync();
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
  });

  it('a malformed page fails cleanly: the swap rolls back and the previous state stays', async () => {
    const corruptions: Array<{ code: string; corrupt: (body: Record<string, unknown>) => void }> = [
      // a row that does not fit its table (a column missing): the set-based insert refuses it
      {
        code: 'OVERSYNC_CLIENT_CODEC',
        corrupt: (b) => {
          const r = (b.rows as Array<{ payload: Record<string, unknown> }>)[3];
          if (r) delete r.payload.name;
        },
      },
      // a row version that cannot be
      {
        code: 'OVERSYNC_CLIENT_PROTOCOL',
        corrupt: (b) => {
          const r = (b.rows as Array<{ row_version: number }>)[5];
          if (r) r.row_version = 0;
        },
      },
      // a page that does not continue the session
      {
        code: 'OVERSYNC_CLIENT_PROTOCOL',
        corrupt: (b) => {
          b.next_row_ordinal = Number(b.next_row_ordinal) + 1;
        },
      },
    ];
    let corrupt: ((body: Record<string, unknown>) => void) | undefined;
    let gets = 0;
    const { seed, d, previous } = await deviceBehind(700, 300, {
      fetch: async (u: string, init: RequestInit) => {
        const res = await globalThis.fetch(u, init);
        const path = new URL(u).pathname;
        if (!corrupt || init.method !== 'GET' || !path.startsWith('/sync/snapshot-sessions/')) return res;
        if (++gets !== 4) return res;
        const body = (await res.json()) as Record<string, unknown>;
        corrupt(body);
        return new Response(JSON.stringify(body), {
          status: res.status,
          headers: { 'content-type': 'application/json' },
        });
      },
    });
    const before = triggers(d);
    expect(before.length).toBeGreaterThanOrEqual(6);
    for (const c of corruptions) {
      corrupt = c.corrupt;
      gets = 0;
      await expect(d.client.rebuild()).rejects.toMatchObject({ code: c.code });
      expect(gets).toBeGreaterThanOrEqual(4);
      expect(snapshot(d.db)).toEqual(previous);
      expect(triggers(d)).toEqual(before);
      expect(count(d, '_sync_row_state')).toBe(700);
      expect(count(d, '_sync_snapshot_stage')).toBe(0);
    }
    corrupt = undefined;
    expect(await d.client.rebuild()).toMatchObject({
      outcome: 'applied_snapshot',
      restore: { rowCount: 1000 },
    });
    expect(snapshot(d.db)).toEqual(snapshot(seed.db));
    // the triggers are back, and capture the app's writes again
    expect(triggers(d)).toEqual(before);
    d.db.prepare(`UPDATE users SET name = 'after' WHERE rowid = 1`).run();
    expect(count(d, '_sync_dirty_rows')).toBe(1);
  });
});
