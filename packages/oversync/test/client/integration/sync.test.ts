import { randomUUID } from 'node:crypto';
import { copyFileSync } from 'node:fs';
import type { ConflictResolver, ProgressEvent } from '@x/oversync/client';
import { describe, expect, it } from 'vitest';
import { type Device, type DeviceOptions, rows, snapshot } from '../helpers/device.js';
import { deviceSuite } from '../helpers/suite.js';

const suite = deviceSuite('d', { retainedBundlesPerUser: 3 });
const { device, attached, serverUsers } = suite;

function addUser(d: Device, name: string, id = randomUUID()): string {
  d.db.prepare(`INSERT INTO users(id, name) VALUES (?, ?)`).run(id, name);
  return id;
}

/**
 * Device a adds users named `names` and syncs; then device b of the same user attaches and so
 * hydrates them. Returns both devices and the ids, in `names` order.
 */
async function seededPair<const Names extends readonly string[]>(
  user: string,
  names: Names,
  opts: { a?: DeviceOptions; b?: DeviceOptions } = {},
): Promise<{ a: Device; b: Device; ids: { [K in keyof Names]: string } }> {
  const a = await attached(user, opts.a);
  const ids = names.map((name) => addUser(a, name)) as { [K in keyof Names]: string };
  await a.client.sync();
  const b = await attached(user, opts.b);
  return { a, b, ids };
}

/** seededPair with one user 'v0', then renamed to 'A' on device a and to 'B' on device b. */
async function conflictingRenames(user: string, bOpts: DeviceOptions = {}) {
  const { a, b, ids } = await seededPair(user, ['v0'], { b: bOpts });
  const [id] = ids;
  a.db.prepare(`UPDATE users SET name = 'A' WHERE id = ?`).run(id);
  b.db.prepare(`UPDATE users SET name = 'B' WHERE id = ?`).run(id);
  return { a, b, id };
}

async function syncAll(...ds: Device[]): Promise<void> {
  for (let round = 0; round < 2; round++) for (const d of ds) await d.client.sync();
}

describe('sync client against our server', () => {
  it('fresh install hydrates from a snapshot with progress, then pulls incrementally', async () => {
    const user = `u-${randomUUID()}`;
    const a = device(user);
    await a.client.open();
    expect(await a.client.attach(user)).toMatchObject({ status: 'connected', outcome: 'started_empty' });
    const ids = Array.from({ length: 30 }, (_, i) => addUser(a, `user ${i}`));
    a.db.prepare(`INSERT INTO posts(id, title, author_id) VALUES (?, 'hello', ?)`).run(randomUUID(), ids[0]);
    const push = await a.client.pushPending();
    expect(push).toMatchObject({ outcome: 'committed', rowCount: 31 });
    expect(await serverUsers(user)).toHaveLength(30);

    const progress: ProgressEvent[] = [];
    const b = device(user, { snapshotChunkRows: 7, onProgress: (e) => progress.push(e) });
    await b.client.open();
    const attached = await b.client.attach(user);
    expect(attached).toMatchObject({
      status: 'connected',
      outcome: 'used_remote_state',
      restore: { rowCount: 31 },
    });
    expect(snapshot(b.db)).toEqual(snapshot(a.db));
    const hydrate = progress.filter((p) => p.phase === 'hydrate');
    const download = hydrate.filter((p) => p.stage === 'download');
    const apply = hydrate.filter((p) => p.stage === 'apply');
    expect(download.at(-1)).toEqual({ phase: 'hydrate', stage: 'download', done: 31, total: 31 });
    expect(download.length).toBeGreaterThan(4);
    // and the apply: rows applied and rows to go, from 0 to all; a file in WAL mode hydrates
    // stage-free (each page applied as it arrives), so the apply follows the download page by
    // page and never gets ahead of it
    expect(apply[0]).toEqual({ phase: 'hydrate', stage: 'apply', done: 0, total: 31 });
    expect(apply.at(-1)).toEqual({ phase: 'hydrate', stage: 'apply', done: 31, total: 31 });
    expect(apply.length).toBeGreaterThan(4);
    let fetched = 0;
    let applied = 0;
    for (const p of hydrate) {
      if (p.stage === 'download') fetched = p.done;
      if (p.stage !== 'apply') continue;
      expect(p.done).toBeGreaterThanOrEqual(applied);
      expect(p.done).toBeLessThanOrEqual(fetched);
      applied = p.done;
    }
    // no local intents after a hydrate
    expect(await b.client.pendingStatus()).toMatchObject({ total: 0 });

    addUser(a, 'late');
    await a.client.sync();
    const pulled = await b.client.pullToStable();
    expect(pulled).toMatchObject({ outcome: 'applied_incremental', bundlesApplied: 1 });
    expect(snapshot(b.db)).toEqual(snapshot(a.db));
  });

  it('seeds a new scope from local rows; another device gets retry_later until the seed lands', async () => {
    const user = `u-${randomUUID()}`;
    const a = device(user);
    // rows written before the first open become the seed
    a.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'pre-existing')`).run(randomUUID());
    await a.client.open();
    expect(await a.client.attach(user)).toMatchObject({ status: 'connected', outcome: 'seeded_from_local' });
    expect(await a.client.readStatus()).toMatchObject({ authority: 'pending_local_seed' });
    const b = device(user);
    await b.client.open();
    b.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'anonymous on b')`).run(randomUUID());
    const later = await b.client.attach(user);
    expect(later).toMatchObject({ status: 'retry_later' });
    expect(later.retryAfterSeconds).toBeGreaterThan(0);
    expect(b.client.connected).toBe(false);
    await expect(b.client.sync()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_ATTACH_REQUIRED' });
    expect((await a.client.sync()).push.outcome).toBe('committed');
    expect(await a.client.readStatus()).toMatchObject({ authority: 'authoritative_materialized' });
    // the scope is initialized now: b's anonymous rows give way to the server's state
    expect(await b.client.attach(user)).toMatchObject({
      outcome: 'used_remote_state',
      restore: { rowCount: 1 },
    });
    expect(rows(b.db, 'users').map((r) => r.name)).toEqual(['pre-existing']);
  });

  it('offline edits stay local, then sync; typed payloads and bytea survive the round trip', async () => {
    const user = `u-${randomUUID()}`;
    const a = device(user);
    await a.client.open();
    await a.client.attach(user);
    a.offline = true;
    const id = randomUUID();
    a.db
      .prepare(
        `INSERT INTO typed_rows(id, name, note, count_value, enabled_flag, rating, data, created_at, doc)
         VALUES (?, 'typed', NULL, 9007199254740991, 1, 2.5, x'00ff10', '2026-03-24T10:42:11-08:00', '{"k":[1,"<&>"]}')`,
      )
      .run(id);
    const fileId = randomUUID();
    a.db
      .prepare(`INSERT INTO files(id, name, data) VALUES (?, 'f.bin', x'deadbeef')`)
      .run(Buffer.from(fileId.replaceAll('-', ''), 'hex'));
    await expect(a.client.sync()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' });
    expect((await a.client.pendingStatus()).total).toBe(2);
    a.offline = false;
    const r = await a.client.sync();
    expect(r.push.outcome).toBe('committed');
    expect(r.status.pending.total).toBe(0);
    const [srv] = await suite.server.query<Record<string, unknown>>(
      `SELECT count_value::text AS c, enabled_flag, rating, encode(data, 'hex') AS data, created_at, doc
       FROM business.typed_rows WHERE _sync_scope_id = $1`,
      [user],
    );
    expect(srv).toMatchObject({
      c: '9007199254740991',
      enabled_flag: true,
      rating: 2.5,
      data: '00ff10',
      doc: { k: [1, '<&>'] },
    });
    expect(new Date(srv?.created_at as Date).toISOString()).toBe('2026-03-24T18:42:11.000Z');
    const [file] = await suite.server.query<{ id: string; data: string }>(
      `SELECT id::text AS id, encode(data, 'hex') AS data FROM business.files WHERE _sync_scope_id = $1`,
      [user],
    );
    expect(file).toEqual({ id: fileId, data: 'deadbeef' });

    const b = device(user);
    await b.client.open();
    await b.client.attach(user);
    const [t] = rows(b.db, 'typed_rows');
    expect(t).toMatchObject({
      id,
      count_value: 9007199254740991,
      enabled_flag: 1,
      rating: 2.5,
      doc: '{"k":[1,"<&>"]}',
    });
    expect(Date.parse(String(t?.created_at))).toBe(Date.parse('2026-03-24T18:42:11Z'));
    expect(Buffer.from(t?.data as Buffer).toString('hex')).toBe('00ff10');
    expect(Buffer.from(rows(b.db, 'files')[0]?.data as Buffer).toString('hex')).toBe('deadbeef');
  });

  it('two devices of one user converge, including deletes and a later edit made during a push', async () => {
    const user = `u-${randomUUID()}`;
    const {
      a,
      b,
      ids: [shared],
    } = await seededPair(user, ['shared']);
    addUser(a, 'from a');
    addUser(b, 'from b');
    b.db.prepare(`UPDATE users SET name = 'renamed by b' WHERE id = ?`).run(shared);
    await syncAll(a, b);
    expect(snapshot(a.db)).toEqual(snapshot(b.db));
    expect(
      rows(a.db, 'users')
        .map((r) => r.name)
        .sort(),
    ).toEqual(['from a', 'from b', 'renamed by b']);
    a.db.prepare(`DELETE FROM users WHERE id = ?`).run(shared);
    await syncAll(a, b);
    expect(snapshot(a.db)).toEqual(snapshot(b.db));
    expect(await serverUsers(user)).toHaveLength(2);
  });

  it('resolves conflicts: accept-server, keep-local and merged', async () => {
    for (const kind of ['accept-server', 'keep-local', 'merged'] as const) {
      const user = `u-${randomUUID()}`;
      const seen: string[] = [];
      const resolver: ConflictResolver = (ctx) => {
        seen.push(`${ctx.localOp}:${ctx.serverRowVersion > ctx.baseRowVersion}`);
        if (kind === 'merged') {
          return {
            kind: 'merged',
            payload: { ...ctx.serverRowLocal, name: `${ctx.serverRowLocal?.name}+${ctx.localPayload?.name}` },
          };
        }
        return { kind };
      };
      const { a, b } = await conflictingRenames(user, { resolver });
      await a.client.sync();
      const r = await b.client.sync();
      expect(seen).toEqual(['UPDATE:true']);
      const expected = { 'accept-server': 'A', 'keep-local': 'B', merged: 'A+B' }[kind];
      if (kind === 'accept-server')
        expect(r.push).toMatchObject({ outcome: 'no_change', conflictsResolved: 1 });
      else expect(r.push).toMatchObject({ outcome: 'committed', conflictsResolved: 1 });
      await syncAll(a, b);
      expect((await serverUsers(user)).map((u) => u.name)).toEqual([expected]);
      expect(rows(a.db, 'users')[0]?.name).toBe(expected);
      expect(rows(b.db, 'users')[0]?.name).toBe(expected);
    }
  });

  it('an invalid merged resolution restores every intent and reports it', async () => {
    const user = `u-${randomUUID()}`;
    const { a, b } = await conflictingRenames(user, {
      resolver: () => ({ kind: 'merged', payload: { nope: 1 } }),
    });
    addUser(b, 'extra');
    await a.client.sync();
    await expect(b.client.pushPending()).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_INVALID_CONFLICT_RESOLUTION',
    });
    expect(await b.client.pendingStatus()).toMatchObject({ dirtyRows: 2, outboxRows: 0 });
    expect(
      rows(b.db, 'users')
        .map((r) => r.name)
        .sort(),
    ).toEqual(['B', 'extra']);
  });

  it('bounded conflict retries: intents stay queued when conflicts persist', async () => {
    const user = `u-${randomUUID()}`;
    const { a, b } = await conflictingRenames(user, { resolver: 'client-wins', maxConflictRetries: 0 });
    await a.client.sync();
    await expect(b.client.pushPending()).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_CONFLICT_RETRY_EXHAUSTED',
      details: { retryCount: 0, remainingDirtyCount: 1 },
    });
    // the rebased intent is pushed by the next call
    expect(await b.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect((await serverUsers(user)).map((u) => u.name)).toEqual(['B']);
  });

  it('fails closed when committed rows do not match the bundle hash, then recovers', async () => {
    const user = `u-${randomUUID()}`;
    let tamper = true;
    const a = device(user, {
      fetch: async (u: string, i: RequestInit) => {
        const res = await fetch(u, i);
        if (!tamper || !u.includes('/sync/committed-bundles/')) return res;
        const body = (await res.json()) as { rows: Array<{ payload?: { name?: string } }> };
        for (const r of body.rows) if (r.payload) r.payload.name = 'tampered';
        return new Response(JSON.stringify(body), { status: res.status, headers: res.headers });
      },
    });
    await a.client.open();
    await a.client.attach(user);
    addUser(a, 'genuine');
    await expect(a.client.pushPending()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_HASH_MISMATCH' });
    expect(rows(a.db, 'users').map((r) => r.name)).toEqual(['genuine']);
    expect(await a.client.pendingStatus()).toMatchObject({ outboxRows: 1 });
    expect((await a.client.readStatus()).lastBundleSeqSeen).toBe(0);
    tamper = false;
    expect(await a.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect(await a.client.readStatus()).toMatchObject({ lastBundleSeqSeen: 1, pending: { total: 0 } });
  });

  it('reports pull progress in rows', async () => {
    const user = `u-${randomUUID()}`;
    const { a, b } = await seededPair(user, ['x'], { b: { downloadLimit: 1 } });
    for (let i = 0; i < 2; i++) {
      addUser(a, `r${i}`);
      addUser(a, `s${i}`);
      await a.client.sync();
    }
    const progress: ProgressEvent[] = [];
    b.client.on('progress', (e) => progress.push(e));
    // one bundle per page (downloadLimit 1); this server retains only 3 bundles
    expect(await b.client.pullToStable()).toMatchObject({
      outcome: 'applied_incremental',
      bundlesApplied: 2,
      rowsApplied: 4,
    });
    expect(progress.filter((p) => p.phase === 'pull').map((p) => [p.done, p.total])).toEqual([
      [2, 2],
      [4, 4],
    ]);
  });

  it('an explicit rebuild swaps in the server state and keeps local intents; same-user reattach after detach', async () => {
    const user = `u-${randomUUID()}`;
    const {
      a,
      b,
      ids: [kept, edited],
    } = await seededPair(user, ['kept', 'edited']);
    b.db.prepare(`UPDATE users SET name = 'changed on b' WHERE id = ?`).run(kept);
    await b.client.sync();
    a.db.prepare(`UPDATE users SET name = 'local edit' WHERE id = ?`).run(edited);
    const fresh = addUser(a, 'local insert');
    const r = await a.client.rebuild();
    expect(r).toMatchObject({ outcome: 'applied_snapshot', restore: { rowCount: 2 } });
    const names = Object.fromEntries(rows(a.db, 'users').map((x) => [x.id, x.name]));
    expect(names).toEqual({ [kept]: 'changed on b', [edited]: 'local edit', [fresh]: 'local insert' });
    expect(await a.client.pendingStatus()).toMatchObject({ dirtyRows: 2 });
    await syncAll(a, b);
    expect(snapshot(a.db)).toEqual(snapshot(b.db));
    expect(await a.client.detach()).toMatchObject({ outcome: 'detached' });
    expect(await a.client.attach(user)).toMatchObject({
      outcome: 'used_remote_state',
      restore: { rowCount: 3 },
    });
    addUser(a, 'after reattach');
    await syncAll(a, b);
    expect(snapshot(a.db)).toEqual(snapshot(b.db));
  });

  it('switches users on one device: the first push and pull of the new user succeed', async () => {
    const u1 = `u-${randomUUID()}`;
    const u2 = `u-${randomUUID()}`;
    const d = device(u1);
    await d.client.open();
    await d.client.attach(u1);
    for (let i = 0; i < 4; i++) {
      addUser(d, `u1-${i}`);
      await d.client.sync();
    }
    addUser(d, 'unsynced');
    await expect(d.client.attach(u2)).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_ATTACH_BINDING_CONFLICT',
    });
    const out = await d.client.syncThenDetach();
    expect(out).toMatchObject({ success: true, remainingPendingRowCount: 0 });
    expect(rows(d.db, 'users')).toEqual([]);
    d.user = u2;
    expect(await d.client.attach(u2)).toMatchObject({ status: 'connected', outcome: 'started_empty' });
    addUser(d, 'u2 row');
    const r = await d.client.sync();
    expect(r.push.outcome).toBe('committed');
    expect(r.pull.outcome).toMatch(/already_at_target|applied_incremental/);
    expect((await serverUsers(u2)).map((x) => x.name)).toEqual(['u2 row']);
    expect(await serverUsers(u1)).toHaveLength(5);
  });

  it('recovers from history_pruned with a snapshot and keeps converging', async () => {
    const user = `u-${randomUUID()}`;
    const { a, b } = await seededPair(user, ['first']);
    for (let i = 0; i < 6; i++) {
      addUser(a, `burst ${i}`);
      await a.client.sync();
    }
    const progress: ProgressEvent[] = [];
    const off = b.client.on('progress', (e) => progress.push(e));
    const pulled = await b.client.pullToStable();
    off();
    expect(pulled.outcome).toBe('applied_snapshot');
    expect(progress.some((p) => p.phase === 'recover' && p.done === p.total)).toBe(true);
    expect(snapshot(b.db)).toEqual(snapshot(a.db));
    addUser(b, 'after recovery');
    await syncAll(a, b);
    expect(snapshot(b.db)).toEqual(snapshot(a.db));
  });

  it('a committed push whose replay was pruned is recovered by a snapshot; later local edits survive', async () => {
    const user = `u-${randomUUID()}`;
    let failFetch = false;
    const { a, b } = await seededPair(user, ['base'], {
      a: {
        fetch: (u: string, i: RequestInit) =>
          failFetch && u.includes('/sync/committed-bundles/')
            ? Promise.reject(new TypeError('fetch failed: socket hang up'))
            : fetch(u, i),
      },
    });
    addUser(a, 'committed but not replayed');
    failFetch = true;
    await expect(a.client.pushPending()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_RETRY_EXHAUSTED' });
    expect(await a.client.pendingStatus()).toMatchObject({ outboxRows: 1 });
    const later = addUser(a, 'edited after the freeze');
    for (let i = 0; i < 5; i++) {
      addUser(b, `b ${i}`);
      await b.client.sync();
    }
    failFetch = false;
    expect(await a.client.pushPending()).toMatchObject({ outcome: 'committed' });
    expect(rows(a.db, 'users').some((r) => r.id === later)).toBe(true);
    await syncAll(a, b);
    expect(snapshot(a.db)).toEqual(snapshot(b.db));
    expect((await serverUsers(user)).map((u) => u.name).sort()).toEqual(
      [
        'b 0',
        'b 1',
        'b 2',
        'b 3',
        'b 4',
        'base',
        'committed but not replayed',
        'edited after the freeze',
      ].sort(),
    );
  });

  it('reinstall from an old backup: source recovery rotates the source, nothing is lost', async () => {
    const user = `u-${randomUUID()}`;
    const a = device(user);
    await a.client.open();
    await a.client.attach(user);
    addUser(a, 'one');
    await a.client.sync();
    await a.client.close();
    const backup = suite.path('backup');
    a.db.exec(`VACUUM INTO '${backup}'`);
    // the device keeps syncing after the backup was taken
    const a2 = device(user, {}, a.path);
    await a2.client.open();
    await a2.client.attach(user);
    for (let i = 0; i < 2; i++) {
      addUser(a2, `after backup ${i}`);
      await a2.client.sync();
    }
    await a2.close();
    // restore the backup over a fresh install and keep editing
    const restoredPath = suite.path('restored');
    copyFileSync(backup, restoredPath);
    const r = device(user, {}, restoredPath);
    await r.client.open();
    await r.client.attach(user);
    const oldSource = r.client.sourceId;
    addUser(r, 'edit on restored device');
    await expect(r.client.sync()).rejects.toMatchObject({ code: 'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED' });
    await expect(r.client.pullToStable()).rejects.toMatchObject({
      code: 'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
    });
    const rebuilt = await r.client.rebuild();
    expect(rebuilt.rotatedSourceId).toBeDefined();
    expect(r.client.sourceId).not.toBe(oldSource);
    await r.client.sync();
    expect((await serverUsers(user)).map((u) => u.name).sort()).toEqual(
      ['after backup 0', 'after backup 1', 'edit on restored device', 'one'].sort(),
    );
    expect(rows(r.db, 'users')).toHaveLength(4);
  });
});
