import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createFixture, Device, type Fixture, nextTraced, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(async () => {
  await fx?.close();
});

const RFC3339_NANO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*[1-9])?Z$/;

describe('connect and initialisation leases', () => {
  test('every resolution: initialize_local, retry_later, lease refresh, seed push, remote_authoritative', async () => {
    const user = `c-${randomUUID()}`;
    const a = new Device(fx.app, user, 'device-a');
    const b = new Device(fx.app, user, 'device-b');
    const first = await a.connect(true);
    expect(first.body).toEqual({
      resolution: 'initialize_local',
      initialization_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      lease_expires_at: expect.stringMatching(RFC3339_NANO_UTC),
    });
    const initId = first.body['initialization_id'] as string;
    // another source, whatever it holds, must wait for the lease
    for (const pending of [true, false]) {
      const other = await b.connect(pending);
      expect(other.body).toEqual({
        resolution: 'retry_later',
        retry_after_seconds: expect.any(Number),
        lease_expires_at: first.body['lease_expires_at'],
      });
      expect(other.body['retry_after_seconds']).toBeGreaterThanOrEqual(1);
      expect(other.body['retry_after_seconds']).toBeLessThanOrEqual(900);
    }
    // the same source reconnecting keeps its initialization_id and gets a fresh lease
    const again = await a.connect(true);
    expect(again.body['initialization_id']).toBe(initId);

    // seed push rules
    const noId = await a.json('POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: 1 });
    expect(noId).toMatchObject({
      status: 400,
      body: {
        error: 'push_session_invalid',
        message: 'initialization_id is required while the scope is initializing',
      },
    });
    const wrongId = await a.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: randomUUID(),
    });
    expect(wrongId).toMatchObject({ status: 409, body: { error: 'initialization_stale' } });
    const notOwner = await b.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: initId,
    });
    expect(notOwner).toMatchObject({
      status: 409,
      body: { error: 'initialization_stale', message: 'source does not own the active initialization lease' },
    });

    const seeded = await a.push([userRow(randomUUID(), 'seed')], { initializationId: initId });
    expect(seeded.status, JSON.stringify(seeded.body)).toBe(200);
    expect((await b.connect(true)).body).toEqual({ resolution: 'remote_authoritative' });
    expect((await a.connect(false)).body).toEqual({ resolution: 'remote_authoritative' });
    const state = await fx.cluster.query<{ state_code: number; initialized_by_source_id: string }>(
      'SELECT s.state_code, s.initialized_by_source_id FROM sync.scope_state s JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1',
      [user],
    );
    expect(state.rows[0]).toEqual({ state_code: 2, initialized_by_source_id: 'device-a' });
    const afterInit = await a.json('POST', '/sync/push-sessions', {
      source_bundle_id: 2,
      planned_row_count: 1,
      initialization_id: initId,
    });
    expect(afterInit.body['message']).toBe('initialization_id must be absent once the scope is initialized');
  });

  test('the owner with nothing pending finishes as initialize_empty; an expired lease lets another source win', async () => {
    const user = `e-${randomUUID()}`;
    const a = new Device(fx.app, user, 'a');
    expect((await a.connect(true)).body['resolution']).toBe('initialize_local');
    expect((await a.connect(false)).body).toEqual({ resolution: 'initialize_empty' });

    const user2 = `x-${randomUUID()}`;
    const c = new Device(fx.app, user2, 'c');
    const d = new Device(fx.app, user2, 'd');
    const lease = await c.connect(true);
    const staged = await c.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: lease.body['initialization_id'],
    });
    expect(staged.status).toBe(200);
    await fx.cluster.query(
      `UPDATE sync.scope_state SET lease_expires_at = now() - interval '1 second'
        WHERE user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = $1)`,
      [user2],
    );
    // the crashed initialiser's later calls fail: the expired lease reset the scope (as in the reference, 409)
    const chunk = await c.json('POST', `/sync/push-sessions/${staged.body['push_id']}/chunks`, {
      start_row_ordinal: 0,
      rows: [userRow(randomUUID(), 'late')],
    });
    expect(chunk).toMatchObject({ status: 409, body: { error: 'initialization_stale' } });
    const win = await d.connect(true);
    expect(win.body['resolution']).toBe('initialize_local');
    expect(win.body['initialization_id']).not.toBe(lease.body['initialization_id']);
    const stale = await c.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: lease.body['initialization_id'],
    });
    expect(stale.body['error']).toBe('initialization_stale');
    const e = new Device(fx.app, `y-${randomUUID()}`, 'e');
    const created = await e.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      initialization_id: randomUUID(),
    });
    expect(created).toMatchObject({ status: 410, body: { error: 'initialization_expired' } });
  });

  test('two devices connecting at once: exactly one wins the lease', async () => {
    const user = `race-${randomUUID()}`;
    const devices = Array.from({ length: 5 }, (_, i) => new Device(fx.app, user, `dev-${i}`));
    const res = await Promise.all(devices.map((d) => d.connect(true)));
    const resolutions = res.map((r) => r.body['resolution']).sort();
    expect(resolutions).toEqual([
      'initialize_local',
      'retry_later',
      'retry_later',
      'retry_later',
      'retry_later',
    ]);
  });
});

describe('lifecycle', () => {
  test('close() during an in-flight push drains it, then refuses new work with 503; no partial bundle', async () => {
    const local = await createFixture();
    try {
      const d = new Device(local.app, `l-${randomUUID()}`);
      await d.connect(false);
      const rows = Array.from({ length: 3000 }, (_, i) => userRow(randomUUID(), `r${i}`));
      const created = await d.json('POST', '/sync/push-sessions', {
        source_bundle_id: 1,
        planned_row_count: rows.length,
      });
      const pushId = created.body['push_id'] as string;
      for (let i = 0; i < rows.length; i += 1000) {
        await d.json('POST', `/sync/push-sessions/${pushId}/chunks`, {
          start_row_ordinal: i,
          rows: rows.slice(i, i + 1000),
        });
      }
      // The service traces each operation's start (x:oversync:<name>): wait for the commit's.
      const commitStarted = nextTraced('push.commit', 'start').promise;
      const commit = d.json('POST', `/sync/push-sessions/${pushId}/commit`);
      await commitStarted;
      expect(local.service.inflightOperations).toBe(1);
      const closing = local.service.close();
      expect(local.service.lifecycle).toBe('shutting_down');
      const refused = await d.json('GET', '/sync/pull?after_bundle_seq=0');
      expect(refused).toMatchObject({
        status: 503,
        body: { error: 'service_unavailable', message: 'Sync service is shutting down' },
      });
      const st = await local.app.inject({ method: 'GET', url: '/syncx/health' });
      expect(st.statusCode).toBe(503);
      expect(st.json()).toMatchObject({
        status: 'unhealthy',
        lifecycle: 'shutting_down',
        accepting_operations: false,
      });
      const done = await commit;
      await closing;
      expect(local.service.lifecycle).toBe('closed');
      expect(await local.service.close()).toBeUndefined(); // idempotent
      // all or nothing: either the whole bundle committed, or nothing of it exists
      const counts = await local.cluster.query<{ bundles: string; rows: string; users: string }>(
        `SELECT (SELECT count(*) FROM sync.bundle_log)::text AS bundles, (SELECT count(*) FROM sync.bundle_rows)::text AS rows,
                (SELECT count(*) FROM business.users)::text AS users`,
      );
      if (done.status === 200) expect(counts.rows[0]).toEqual({ bundles: '1', rows: '3000', users: '3000' });
      else expect(counts.rows[0]).toEqual({ bundles: '0', rows: '0', users: '0' });
      expect((await d.json('POST', '/sync/connect', { has_local_pending_rows: false })).status).toBe(503);
    } finally {
      await local.close();
    }
  });

  test('close() aborts stragglers after its drain deadline, leaving no partial bundle', async () => {
    const local = await createFixture();
    try {
      const d = new Device(local.app, `s-${randomUUID()}`);
      await d.connect(false);
      let sleeping!: () => void;
      const slowStarted = new Promise<void>((r) => {
        sleeping = r;
      });
      const slow = local.service.withinSyncBundle(
        { userId: d.userId },
        { sourceId: 'job', sourceBundleId: 1 },
        async (tx) => {
          await tx.query(`INSERT INTO business.users (id, name, email) VALUES ($1, 'slow', 'e')`, [
            randomUUID(),
          ]);
          const sleep = tx.query('SELECT pg_sleep(5)');
          sleeping();
          await sleep;
        },
      );
      const outcome = slow.then(
        () => 'committed',
        (e: { code?: string }) => e.code ?? 'failed',
      );
      await slowStarted;
      await local.service.close({ drainTimeoutMs: 200 });
      expect(local.service.lifecycle).toBe('closed');
      expect(await outcome).not.toBe('committed');
      const n = await local.cluster.query<{ n: string }>('SELECT count(*)::text AS n FROM business.users');
      expect(n.rows[0]!.n).toBe('0');
    } finally {
      await local.close();
    }
  });
});
