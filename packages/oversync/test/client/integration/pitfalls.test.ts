// The reference client's §11 pitfalls this client fixes, each shown against our server.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { type Device, type DeviceOptions, rows } from '../helpers/device.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('p');

async function serverName(user: string, id: string): Promise<string | undefined> {
  const r = await suite.server.query<{ name: string }>(
    `SELECT name FROM business.users WHERE _sync_scope_id = $1 AND id = $2`,
    [user, id],
  );
  return r[0]?.name;
}

/** Two devices of a fresh user sharing one row `id` at version 1. */
async function sharedRow(optsB: DeviceOptions = {}) {
  const user = `u-${randomUUID()}`;
  const a = await suite.attached(user);
  const id = randomUUID();
  a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'v0')`).run(id);
  await a.client.sync();
  const b = await suite.attached(user, optsB);
  return { user, a, b, id };
}

/**
 * Device B of `sharedRow` has a conflicting UPDATE ('B frozen' over A's 'A') queued; `edit` runs on
 * B's database once, while B's push is on its way to the commit (after the freeze).
 */
async function editDuringFrozenConflict(
  resolver: 'server-wins' | 'client-wins',
  edit: (db: Device['db'], id: string) => void,
) {
  let pending: (() => void) | undefined;
  const shared = await sharedRow({
    resolver,
    fetch: (u: string, i: RequestInit) => {
      // the request that commits: a push session's commit, or the one-request push
      if (pending && (u.endsWith('/commit') || u.endsWith('/sync/push'))) {
        pending();
        pending = undefined;
      }
      return fetch(u, i);
    },
  });
  const { a, b, id } = shared;
  a.db.prepare(`UPDATE users SET name = 'A' WHERE id = ?`).run(id);
  await a.client.sync();
  b.db.prepare(`UPDATE users SET name = 'B frozen' WHERE id = ?`).run(id);
  pending = () => edit(b.db, id);
  await b.client.sync();
  await b.client.sync();
  return { ...shared, editRan: pending === undefined };
}

describe('reference-client pitfalls, fixed', () => {
  it('an edit made while a push is in flight survives an accept-server conflict (pitfall 8)', async () => {
    const { user, a, id } = await editDuringFrozenConflict('server-wins', (db, rowId) => {
      db.prepare(`UPDATE users SET name = ? WHERE id = ?`).run('B edited after the freeze', rowId);
    });
    expect(await serverName(user, id)).toBe('B edited after the freeze');
    await a.client.sync();
    expect(rows(a.db, 'users')[0]?.name).toBe('B edited after the freeze');
  });

  // Found by the convergence harness (seed 1402): the frozen UPDATE was written back over the
  // app's newer DELETE, so the delete never reached the server and the row came back everywhere.
  for (const resolver of ['server-wins', 'client-wins'] as const) {
    it(`a delete made while a push is in flight survives a conflict on the frozen update (${resolver})`, async () => {
      const { user, a, b, id, editRan } = await editDuringFrozenConflict(resolver, (db, rowId) => {
        db.prepare(`DELETE FROM users WHERE id = ?`).run(rowId);
      });
      expect(editRan).toBe(true);
      expect(await serverName(user, id)).toBeUndefined();
      expect(rows(b.db, 'users').some((r) => r.id === id)).toBe(false);
      expect(await b.client.conflicts()).toMatchObject([
        { localOp: 'UPDATE', resolution: 'keep-local', rule: 'newer-local-edit', localLost: false },
      ]);
      expect(await b.client.pendingStatus()).toMatchObject({ total: 0 });
      await a.client.sync();
      expect(rows(a.db, 'users').some((r) => r.id === id)).toBe(false);
    });
  }

  it('pulls apply around local intents; the push then meets the conflict and the resolver decides', async () => {
    const { user, a, b, id } = await sharedRow();
    a.db.prepare(`UPDATE users SET name = 'A' WHERE id = ?`).run(id);
    await a.client.sync();
    b.db.prepare(`UPDATE users SET name = 'B' WHERE id = ?`).run(id);
    const other = randomUUID();
    a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'other')`).run(other);
    await a.client.sync();
    expect(await b.client.pullToStable()).toMatchObject({ outcome: 'applied_incremental' });
    expect(rows(b.db, 'users').find((r) => r.id === id)?.name).toBe('B');
    expect(rows(b.db, 'users').some((r) => r.id === other)).toBe(true);
    expect(await b.client.pushPending()).toMatchObject({ outcome: 'no_change', conflictsResolved: 1 });
    expect(rows(b.db, 'users').find((r) => r.id === id)?.name).toBe('A');
    expect(await serverName(user, id)).toBe('A');
  });

  it('a 409 push_conflict without details is retried a bounded number of times, then rebased (pitfall 12)', async () => {
    const { user, a, b, id } = await sharedRow({
      maxUnstructuredConflicts: 2,
      fetch: async (u: string, i: RequestInit) => {
        const res = await fetch(u, i);
        if (res.status !== 409) return res;
        const body = (await res.json()) as Record<string, unknown>;
        delete body.conflict;
        return new Response(JSON.stringify(body), { status: 409, headers: res.headers });
      },
    });
    a.db.prepare(`UPDATE users SET name = 'A' WHERE id = ?`).run(id);
    await a.client.sync();
    b.db.prepare(`UPDATE users SET name = 'B' WHERE id = ?`).run(id);
    await expect(b.client.pushPending()).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_PUSH_CONFLICT',
      details: { attempts: 1 },
    });
    await expect(b.client.pushPending()).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_PUSH_CONFLICT',
      details: { attempts: 2, rebased: true },
    });
    expect(await b.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect(await serverName(user, id)).toBe('B');
  });

  it('anonymous offline rows block detach unless forced (pitfall 11)', async () => {
    const user = `u-${randomUUID()}`;
    const d = suite.device(user);
    await d.client.open();
    d.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'anonymous')`).run(randomUUID());
    expect(await d.client.detach()).toEqual({ outcome: 'blocked_unsynced_data', pendingRowCount: 1 });
    expect(rows(d.db, 'users')).toHaveLength(1);
  });
});
