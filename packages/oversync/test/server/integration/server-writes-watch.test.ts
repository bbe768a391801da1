import { isSyncServerError, oversyncFastifyPlugin } from '@x/oversync/server';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { createFixture, Device, type Fixture, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
let baseUrl: string;
let server: FastifyInstance;
beforeAll(async () => {
  fx = await createFixture({ service: { bundleChangeWatch: { enabled: true, heartbeatIntervalMs: 100 } } });
  // A real listening server for server-sent events, with a per-actor watch policy.
  server = Fastify();
  await server.register(oversyncFastifyPlugin, {
    service: fx.service,
    userIdFromRequest: (req) => req.headers['x-test-user'] as string | undefined,
    bundleChangeWatchAllowed: (_req, actor) => !actor.sourceId.startsWith('no-watch'),
  });
  baseUrl = await server.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(async () => {
  await server?.close();
  await fx?.close();
});

async function device(source?: string) {
  const d = new Device(fx.app, `w-${randomUUID()}`, source);
  await d.connect(false);
  return d;
}
const codeOf = (e: unknown) => (isSyncServerError(e) ? e.code : String(e));

describe('server-originated writes', () => {
  test('withinSyncBundle: the bundle reaches clients in the next pull; sequencing and empty writes', async () => {
    const d = await device();
    const id = randomUUID();
    const bundle = await fx.service.withinSyncBundle(
      { userId: d.userId },
      { sourceId: 'server-job', sourceBundleId: 1 },
      async (tx) => {
        await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
          id,
          'from-server',
          's@example.com',
        ]);
      },
    );
    expect(bundle).toMatchObject({
      bundle_seq: 1,
      source_id: 'server-job',
      source_bundle_id: 1,
      row_count: 1,
    });
    const pulled = await d.pull(0);
    expect(pulled.body['bundles']).toMatchObject([
      {
        bundle_seq: 1,
        source_id: 'server-job',
        rows: [{ op: 'INSERT', key: { id }, payload: { name: 'from-server' } }],
      },
    ]);
    // a reused source_bundle_id is history_pruned (no idempotent replay), a gap is out of order
    const noop = async () => {};
    await expect(
      fx.service.withinSyncBundle({ userId: d.userId }, { sourceId: 'server-job', sourceBundleId: 1 }, noop),
    ).rejects.toSatisfy((e) => codeOf(e) === 'OVERSYNC_HISTORY_PRUNED');
    await expect(
      fx.service.withinSyncBundle({ userId: d.userId }, { sourceId: 'server-job', sourceBundleId: 3 }, noop),
    ).rejects.toSatisfy((e) => codeOf(e) === 'OVERSYNC_SOURCE_SEQUENCE_OUT_OF_ORDER');
    // no captured effects: no bundle, nothing consumed
    expect(
      await fx.service.withinSyncBundle(
        { userId: d.userId },
        { sourceId: 'server-job', sourceBundleId: 2 },
        noop,
      ),
    ).toBeNull();
    // a callback error rolls everything back
    await expect(
      fx.service.withinSyncBundle(
        { userId: d.userId },
        { sourceId: 'server-job', sourceBundleId: 2 },
        async (tx) => {
          await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
            randomUUID(),
            'x',
            'x',
          ]);
          throw new Error('boom');
        },
      ),
    ).rejects.toThrow('boom');
    expect(
      await fx.service.withinSyncBundle(
        { userId: d.userId },
        { sourceId: 'server-job', sourceBundleId: 2 },
        async (tx) => {
          await tx.query("UPDATE business.users SET name = 'edited' WHERE id = $1 AND _sync_scope_id = $2", [
            id,
            d.userId,
          ]);
        },
      ),
    ).toMatchObject({ bundle_seq: 2, rows: [{ op: 'UPDATE', payload: { name: 'edited' } }] });
    const uninit = new Device(fx.app, `u-${randomUUID()}`);
    await expect(
      fx.service.withinSyncBundle({ userId: uninit.userId }, { sourceId: 's', sourceBundleId: 1 }, noop),
    ).rejects.toSatisfy((e) => codeOf(e) === 'OVERSYNC_SCOPE_UNINITIALIZED');
  });

  test('scope manager execWrite initialises a fresh scope, sequences the writer, rolls back empty writes', async () => {
    const scope = `scope-${randomUUID()}`;
    const mgr = fx.service.scopeManager();
    await expect(mgr.execWrite(scope, { writerId: 'importer' }, async () => {})).rejects.toSatisfy(
      (e) => codeOf(e) === 'OVERSYNC_SCOPE_WRITE_NO_CAPTURED_CHANGES',
    );
    // the failed write rolled back its auto-initialisation: a device could still initialise
    const probe = await fx.cluster.query<{ state_code: number }>(
      'SELECT s.state_code FROM sync.scope_state s JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1',
      [scope],
    );
    expect(probe.rows.map((r) => r.state_code)).not.toContain(2);
    const id = randomUUID();
    const first = await mgr.execWrite(scope, { writerId: 'importer' }, async (tx) => {
      await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
        id,
        'imported',
        'i@example.com',
      ]);
    });
    expect(first).toMatchObject({
      autoInitialized: true,
      bundle: { bundle_seq: 1, source_id: 'importer', source_bundle_id: 1 },
    });
    const second = await mgr.execWrite(scope, { writerId: 'importer' }, async (tx) => {
      await tx.query("UPDATE business.users SET name = 'again' WHERE id = $1 AND _sync_scope_id = $2", [
        id,
        scope,
      ]);
    });
    expect(second).toMatchObject({ autoInitialized: false, bundle: { bundle_seq: 2, source_bundle_id: 2 } });
    const d = new Device(fx.app, scope);
    expect((await d.connect(true)).body).toEqual({ resolution: 'remote_authoritative' });
    expect(((await d.pull(0)).body['bundles'] as unknown[]).length).toBe(2);
    await expect(mgr.execWrite('', { writerId: 'w' }, async () => {})).rejects.toSatisfy(
      (e) => codeOf(e) === 'OVERSYNC_SCOPE_WRITE_INVALID',
    );
    await expect(mgr.execWrite(scope, { writerId: ' ' }, async () => {})).rejects.toSatisfy(
      (e) => codeOf(e) === 'OVERSYNC_SCOPE_WRITE_INVALID',
    );
  });
});

/** Reads SSE frames from a streaming fetch response. */
function sse(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  return {
    /** The next frame, or `<end>` once the stream ended (a stream that hangs fails by the test's timeout). */
    async next(): Promise<string> {
      for (;;) {
        const idx = buf.indexOf('\n\n');
        if (idx >= 0) {
          const frame = buf.slice(0, idx);
          buf = buf.slice(idx + 2);
          return frame;
        }
        const chunk = await reader.read();
        if (chunk.done) return '<end>';
        buf += decoder.decode(chunk.value, { stream: true });
      }
    },
    async nextEvent() {
      for (;;) {
        const f = await this.next();
        if (f === '<end>') return f;
        if (f.startsWith('event: bundle'))
          return JSON.parse(f.split('\ndata: ')[1]!) as Record<string, unknown>;
      }
    },
    cancel: () => reader.cancel(),
  };
}
function open(d: Device, query = '') {
  const ac = new AbortController();
  const res = fetch(`${baseUrl}/sync/watch${query}`, {
    headers: { 'x-test-user': d.userId, 'oversync-source-id': d.sourceId },
    signal: ac.signal,
  });
  return { res, ac };
}

describe('watch', () => {
  test('capabilities advertise it; a commit wakes the stream; heartbeats flow; catch-up on subscribe', async () => {
    const d = await device();
    const caps = await d.json('GET', '/sync/capabilities');
    expect((caps.body['features'] as Record<string, boolean>)['bundle_change_watch']).toBe(true);
    await d.push([userRow(randomUUID(), 'before')]);
    const { res, ac } = open(d, '?after_bundle_seq=0');
    const r = await res;
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/event-stream');
    expect(r.headers.get('cache-control')).toBe('no-cache');
    const s = sse(r);
    expect(await s.nextEvent()).toEqual({ bundle_seq: 1 }); // immediate catch-up, no source fields
    await (
      fx.service as unknown as { bundleChangeListenerReady(): Promise<void> }
    ).bundleChangeListenerReady();
    const writer = new Device(fx.app, d.userId, 'other-device');
    await writer.push([userRow(randomUUID(), 'after')]);
    expect(await s.nextEvent()).toEqual({ bundle_seq: 2, source_id: 'other-device', source_bundle_id: 1 });
    expect(await s.next()).toBe(': heartbeat');
    ac.abort();
  });

  test('policy hook 403, bad after 400, uninitialized 409; disabled watch is 503', async () => {
    const blocked = await device('no-watch-device');
    expect((await (await open(blocked).res).json()) as unknown).toMatchObject({
      error: 'bundle_change_watch_forbidden',
    });
    const caps = await blocked.json('GET', '/sync/capabilities');
    expect((caps.body['features'] as Record<string, boolean>)['bundle_change_watch']).toBe(true); // fixture app has no policy
    const blockedCaps = await fetch(`${baseUrl}/sync/capabilities`, {
      headers: { 'x-test-user': blocked.userId, 'oversync-source-id': blocked.sourceId },
    });
    expect(
      ((await blockedCaps.json()) as { features: Record<string, boolean> }).features['bundle_change_watch'],
    ).toBe(false);
    const d = await device();
    const bad = await await open(d, '?after_bundle_seq=-1').res;
    expect(bad.status).toBe(400);
    const fresh = new Device(fx.app, `f-${randomUUID()}`);
    expect((await (await open(fresh).res).json()) as unknown).toMatchObject({ error: 'scope_uninitialized' });
    const off = await createFixture();
    try {
      const od = new Device(off.app, `o-${randomUUID()}`);
      await od.connect(false);
      expect(await od.json('GET', '/sync/watch')).toMatchObject({
        status: 503,
        body: { error: 'bundle_change_watch_disabled' },
      });
      expect(
        ((await od.json('GET', '/sync/capabilities')).body['features'] as Record<string, boolean>)[
          'bundle_change_watch'
        ],
      ).toBe(false);
    } finally {
      await off.close();
    }
  });
});

describe('cancellation and shutdown of long operations', () => {
  test('an abort mid-flight cancels the database work and rolls the bundle back', async () => {
    const d = await device();
    const ac = new AbortController();
    const p = fx.service.withinSyncBundle(
      { userId: d.userId },
      { sourceId: 'slow-job', sourceBundleId: 1 },
      async (tx) => {
        await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [
          randomUUID(),
          'x',
          'x',
        ]);
        const sleep = tx.query('SELECT pg_sleep(10)');
        // The caller gives up while the database works on the bundle.
        ac.abort(new Error('caller gave up'));
        await sleep;
      },
      { signal: ac.signal },
    );
    await expect(p).rejects.toMatchObject({ code: 'DBX_QUERY_CANCELLED' });
    const rows = await fx.cluster.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM business.users WHERE _sync_scope_id = $1',
      [d.userId],
    );
    expect(rows.rows[0]!.n).toBe('0');
    // the source sequence was not consumed
    expect(
      await fx.service.withinSyncBundle(
        { userId: d.userId },
        { sourceId: 'slow-job', sourceBundleId: 1 },
        async () => {},
      ),
    ).toBeNull();
  });

  test('close() ends open watch streams', async () => {
    await withOpenWatch(async ({ local, stream }) => {
      await local.service.close();
      expect(await stream.next()).toBe('<end>');
      expect(local.service.lifecycle).toBe('closed');
    });
  });
});

describe('fastify lifecycle', () => {
  test('app.close() alone ends open watch streams instead of hanging on them', async () => {
    await withOpenWatch(async ({ app, stream }) => {
      // Hanging on the stream would fail this test by its timeout.
      await app.close();
      expect(await stream.next()).toBe('<end>');
    });
  });
});

describe('fastify lifecycle after clients go away', () => {
  test("app.close() is not held by the stream's keep-alive connection, whether the watching client dropped its stream or not", async () => {
    for (const drop of [false, true]) {
      await withOpenWatch(async ({ local, app, stream }) => {
        if (drop) {
          await stream.cancel();
          // The server saw the client go: its subscription is closed.
          await vi.waitFor(() => expect(local.service.bundleChangeSubscriberCount()).toBe(0));
        }
        // Neither waits out fastify's 72 s keep-alive on the stream's connection (the server closes
        // it): that would fail this test by its timeout. A client that dropped its stream may leave a
        // fresh idle connection of its own (undici opens one when a body is cancelled and closes it
        // after its 4 s keep-alive), which an app with the default forceCloseConnections: 'idle'
        // still waits for.
        await app.close();
      });
    }
  });
});

/** A listening app on a service of its own, with one device's watch stream open. */
async function withOpenWatch(
  fn: (ctx: { local: Fixture; app: FastifyInstance; stream: ReturnType<typeof sse> }) => Promise<void>,
) {
  const local = await createFixture({
    service: { bundleChangeWatch: { enabled: true, heartbeatIntervalMs: 5000 } },
  });
  const app = Fastify();
  try {
    await app.register(oversyncFastifyPlugin, {
      service: local.service,
      userIdFromRequest: (req) => req.headers['x-test-user'] as string | undefined,
    });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    const d = new Device(local.app, `c-${randomUUID()}`);
    await d.connect(false);
    const res = await fetch(`${url}/sync/watch`, {
      headers: { 'x-test-user': d.userId, 'oversync-source-id': d.sourceId },
    });
    expect(res.status).toBe(200);
    await fn({ local, app, stream: sse(res) });
  } finally {
    await app.close();
    await local.close();
  }
}

describe('capture normalisation (committed bundles reflect database effects)', () => {
  test('insert+delete vanish, delete+insert is an UPDATE, key changes are DELETE+INSERT, repeated updates collapse', async () => {
    const d = await device();
    const src = { sourceId: 'norm', sourceBundleId: 1 };
    const a = randomUUID();
    const gone = randomUUID();
    // insert + delete of the same key inside one bundle: nothing, and no bundle at all
    expect(
      await fx.service.withinSyncBundle({ userId: d.userId }, src, async (tx) => {
        await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [gone, 'g', 'g']);
        await tx.query('DELETE FROM business.users WHERE id = $1 AND _sync_scope_id = $2', [gone, d.userId]);
      }),
    ).toBeNull();
    const b1 = await fx.service.withinSyncBundle({ userId: d.userId }, src, async (tx) => {
      await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [a, 'a1', 'a']);
      await tx.query("UPDATE business.users SET name = 'a2' WHERE id = $1 AND _sync_scope_id = $2", [
        a,
        d.userId,
      ]);
      await tx.query("UPDATE business.users SET name = 'a3' WHERE id = $1 AND _sync_scope_id = $2", [
        a,
        d.userId,
      ]);
    });
    expect(b1?.rows).toMatchObject([{ op: 'INSERT', key: { id: a }, payload: { name: 'a3' } }]);
    const b2 = await fx.service.withinSyncBundle(
      { userId: d.userId },
      { ...src, sourceBundleId: 2 },
      async (tx) => {
        await tx.query('DELETE FROM business.users WHERE id = $1 AND _sync_scope_id = $2', [a, d.userId]);
        await tx.query('INSERT INTO business.users (id, name, email) VALUES ($1, $2, $3)', [a, 'again', 'a']);
        await tx.query('UPDATE business.users SET name = name WHERE id = $1 AND _sync_scope_id = $2', [
          a,
          d.userId,
        ]);
      },
    );
    expect(b2?.rows).toMatchObject([{ op: 'UPDATE', key: { id: a }, payload: { name: 'again' } }]);
    const moved = randomUUID();
    const b3 = await fx.service.withinSyncBundle(
      { userId: d.userId },
      { ...src, sourceBundleId: 3 },
      async (tx) => {
        await tx.query('UPDATE business.users SET id = $1 WHERE id = $2 AND _sync_scope_id = $3', [
          moved,
          a,
          d.userId,
        ]);
      },
    );
    expect(b3?.rows.map((r) => [r.op, (r.key as { id: string }).id])).toEqual([
      ['DELETE', a],
      ['INSERT', moved],
    ]);
    // deletes of a push commit in uploaded order
    const ids = Array.from({ length: 5 }, () => randomUUID());
    const pushed = await d.push(ids.map((id) => userRow(id, 'x')));
    const seq = pushed.body['bundle_seq'] as number;
    const order = [ids[3]!, ids[0]!, ids[4]!, ids[1]!, ids[2]!];
    const del = await d.push(
      order.map((id) => ({
        schema: 'business',
        table: 'users',
        key: { id },
        op: 'DELETE',
        base_row_version: seq,
      })),
    );
    const rows = await d.json('GET', `/sync/committed-bundles/${del.body['bundle_seq']}/rows`);
    expect((rows.body['rows'] as Array<{ key: { id: string }; op: string }>).map((r) => r.key.id)).toEqual(
      order,
    );
    // a writer cannot touch another scope's row: the owner guard fails the whole bundle
    const other = await device();
    const theirs = randomUUID();
    await other.push([userRow(theirs, 'theirs')]);
    await expect(
      fx.service.withinSyncBundle({ userId: d.userId }, { ...src, sourceBundleId: 4 }, async (tx) => {
        await tx.query("UPDATE business.users SET name = 'stolen' WHERE id = $1", [theirs]);
      }),
    ).rejects.toThrow(/scope mismatch/);
  });
});

describe('watch listener resilience', () => {
  test('a dropped LISTEN connection reconnects and catches subscribers up', async () => {
    const d = await device();
    const { res, ac } = open(d, '?after_bundle_seq=0');
    const s = sse(await res);
    await (
      fx.service as unknown as { bundleChangeListenerReady(): Promise<void> }
    ).bundleChangeListenerReady();
    const killed = await fx.cluster.query<{ n: string }>(
      `SELECT count(pg_terminate_backend(pid))::text AS n FROM pg_stat_activity
        WHERE datname = current_database() AND query ILIKE 'LISTEN%'`,
    );
    expect(Number(killed.rows[0]!.n)).toBeGreaterThanOrEqual(1);
    const writer = new Device(fx.app, d.userId, 'writer-after-drop');
    await writer.push([userRow(randomUUID(), 'after-drop')]);
    const e = await s.nextEvent();
    expect(e).toMatchObject({ bundle_seq: 1 });
    ac.abort();
  });
});
