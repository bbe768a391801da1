import { BACKEND_WRITE_SOURCE_ID, WIRE_ERROR_STATUS } from '@x/oversync/server';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createFixture, Device, type Fixture, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture({
    bodyLimit: 64 * 1024,
    service: { appName: 'fixture-app', bundleChangeWatch: { enabled: true } },
  });
});
afterAll(async () => {
  await fx?.close();
});

describe('actor middleware and routing', () => {
  test('missing user is 401 authentication_failed; missing source header is 400 invalid_request', async () => {
    const noUser = await fx.app.inject({
      method: 'GET',
      url: '/sync/pull',
      headers: { 'oversync-source-id': 's' },
    });
    expect(noUser.statusCode).toBe(401);
    expect(noUser.headers['content-type']).toMatch(/^application\/json/);
    expect(noUser.json()).toEqual({
      error: 'authentication_failed',
      message: 'authenticated user_id not found in request context',
    });
    const blank = await fx.app.inject({
      method: 'GET',
      url: '/sync/pull',
      headers: { 'x-test-user': '  ', 'oversync-source-id': 's' },
    });
    expect(blank.statusCode).toBe(401);
    const noSource = await fx.app.inject({
      method: 'GET',
      url: '/sync/pull',
      headers: { 'x-test-user': 'u', 'oversync-source-id': ' ' },
    });
    expect(noSource.statusCode).toBe(400);
    expect(noSource.json()).toEqual({
      error: 'invalid_request',
      message: 'Oversync-Source-ID header is required',
    });
  });

  test('the source id of backend-write bundles is refused from a device (connect and replacement)', async () => {
    const reserved = await fx.app.inject({
      method: 'POST',
      url: '/sync/connect',
      headers: { 'x-test-user': `u-${randomUUID()}`, 'oversync-source-id': ` ${BACKEND_WRITE_SOURCE_ID} ` },
      payload: { has_local_pending_rows: false },
    });
    expect(reserved.statusCode).toBe(400);
    expect(reserved.json()).toEqual({
      error: 'invalid_request',
      message: `Oversync-Source-ID header is reserved for backend writes (${BACKEND_WRITE_SOURCE_ID})`,
    });
    const d = new Device(fx.app, `rep-${randomUUID()}`, 'replaced-source');
    await d.connect(false);
    const rep = await d.json('POST', '/sync/snapshot-sessions', {
      source_replacement: {
        previous_source_id: 'replaced-source',
        new_source_id: BACKEND_WRITE_SOURCE_ID,
        reason: 'history_pruned',
      },
    });
    expect(rep.status).toBe(400);
    expect(rep.body).toMatchObject({ error: 'snapshot_session_invalid' });
    expect(String(rep.body['message'])).toContain('reserved for backend writes');
  });

  test('the source id comes from the header only, never from the body', async () => {
    const d = new Device(fx.app, `hdr-${randomUUID()}`, 'header-source');
    await d.connect(false);
    const res = await d.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 1,
      source_id: 'body-source',
    });
    expect(res.status).toBe(200);
    const row = await fx.cluster.query<{ source_id: string }>(
      'SELECT source_id FROM sync.push_sessions WHERE push_id = $1',
      [res.body['push_id']],
    );
    expect(row.rows[0]!.source_id).toBe('header-source');
  });

  test('a wrong method on a known path is 405 method_not_allowed', async () => {
    const d = new Device(fx.app, 'm');
    expect(await d.json('GET', '/sync/connect')).toMatchObject({
      status: 405,
      body: { error: 'method_not_allowed', message: 'Only POST method is allowed' },
    });
    expect((await d.json('POST', '/sync/pull')).status).toBe(405);
    expect((await fx.app.inject({ method: 'PUT', url: '/syncx/status' })).statusCode).toBe(405);
  });

  test('every wire error code maps to one HTTP status', () => {
    expect(WIRE_ERROR_STATUS.push_conflict).toBe(409);
    expect(WIRE_ERROR_STATUS.initialization_expired).toBe(410);
    expect(WIRE_ERROR_STATUS.service_unavailable).toBe(503);
    for (const [code, status] of Object.entries(WIRE_ERROR_STATUS)) {
      expect([400, 401, 403, 404, 405, 409, 410, 500, 503], code).toContain(status);
    }
  });
});

describe('capabilities, status, health', () => {
  test('capabilities advertise the protocol surface, never key types or the scope column', async () => {
    const d = new Device(fx.app, 'caps');
    const res = await d.req('GET', '/sync/capabilities');
    expect(res.body.endsWith('\n')).toBe(true);
    const body = res.json();
    expect(body).toMatchObject({
      protocol_version: 'v1',
      schema_version: 1,
      app_name: 'fixture-app',
      registered_tables: [
        'business.categories',
        'business.file_reviews',
        'business.files',
        'business.posts',
        'business.team_members',
        'business.teams',
        'business.typed_rows',
        'business.users',
      ],
      features: {
        connect_lifecycle: true,
        server_checkpoint_tracking: false,
        bundle_change_watch: true,
        bundle_pull: true,
      },
      bundle_limits: {
        max_bundles_per_pull: 5000,
        default_rows_per_push_chunk: 1000,
        max_rows_per_push_chunk: 5000,
        push_session_ttl_seconds: 900,
        default_rows_per_committed_bundle_chunk: 1000,
        max_rows_per_committed_bundle_chunk: 5000,
        default_rows_per_snapshot_chunk: 1000,
        max_rows_per_snapshot_chunk: 5000,
        snapshot_session_ttl_seconds: 900,
        initialization_lease_ttl_seconds: 900,
      },
    });
    expect(body.registered_table_specs[0]).toEqual({
      schema: 'business',
      table: 'categories',
      sync_key_columns: ['id'],
    });
    expect(body.features).not.toHaveProperty('push_sessions');
    expect(body.bundle_limits).not.toHaveProperty('max_rows_per_bundle');
    expect(res.body).not.toContain('_sync_scope_id');
    expect(res.body).not.toContain('uuid');
  });

  test('status and health need no actor and report every field', async () => {
    const d = new Device(fx.app, `st-${randomUUID()}`);
    await d.connect(false);
    await d.push([userRow(randomUUID(), 'x')]);
    const res = await fx.app.inject({ method: 'GET', url: '/syncx/status' });
    expect(res.statusCode).toBe(200);
    const s = res.json();
    expect(Object.keys(s).sort()).toEqual(
      [
        'status',
        'version',
        'app_name',
        'lifecycle',
        'accepting_operations',
        'inflight_operations',
        'registered_tables',
        'features',
        'user_state_retention_floor_ahead_count',
        'latest_bundle_seq_max',
        'retained_bundle_floor_min',
        'retained_bundle_floor_max',
        'retained_bundle_window_min',
        'retained_bundle_window_max',
        'history_pruned_error_count',
        'accepted_push_replay_count',
        'rejected_registered_write_count',
        'committed_bundle_count',
        'committed_bundle_bytes',
      ].sort(),
    );
    expect(s).toMatchObject({
      status: 'healthy',
      version: 'v1',
      app_name: 'fixture-app',
      lifecycle: 'running',
      accepting_operations: true,
    });
    expect(s.committed_bundle_count).toBeGreaterThanOrEqual(1);
    expect(s.committed_bundle_bytes).toBeGreaterThan(0);
    expect(s.latest_bundle_seq_max).toBeGreaterThanOrEqual(1);
    const health = await fx.app.inject({ method: 'GET', url: '/syncx/health' });
    expect(health.statusCode).toBe(200);
    expect(health.json().status).toBe('healthy');
  });
});

describe('malformed and oversized input', () => {
  test('bad JSON gets the endpoint code; an oversized body is 413; the server keeps serving', async () => {
    const d = new Device(fx.app, `bad-${randomUUID()}`);
    await d.connect(false);
    expect(await d.json('POST', '/sync/connect', '{')).toMatchObject({
      status: 400,
      body: { error: 'invalid_request', message: 'Failed to parse connect request' },
    });
    expect((await d.json('POST', '/sync/connect', '')).status).toBe(400);
    expect((await d.json('POST', '/sync/connect', '{"has_local_pending_rows":"yes"}')).status).toBe(400);
    expect(
      (await d.json('POST', '/sync/push-sessions', '{"source_bundle_id":1.5,"planned_row_count":1}')).status,
    ).toBe(400);
    const big = await d.req('POST', '/sync/push-sessions', JSON.stringify({ pad: 'x'.repeat(100 * 1024) }));
    expect(big.statusCode, big.body).toBe(413);
    expect(big.json()).toMatchObject({ error: 'invalid_request' });
    expect((await d.push([userRow(randomUUID(), 'still-ok')])).status).toBe(200);
  });

  test('Go-style decoding: case-insensitive field names, unknown fields ignored, null = zero value', async () => {
    const d = new Device(fx.app, `go-${randomUUID()}`);
    expect(
      (await d.json('POST', '/sync/connect', '{"Has_Local_Pending_Rows":true,"extra":1}')).body['resolution'],
    ).toBe('initialize_local');
    const d2 = new Device(fx.app, `go2-${randomUUID()}`);
    expect(
      (await d2.json('POST', '/sync/connect', '{"has_local_pending_rows":null}')).body['resolution'],
    ).toBe('initialize_empty');
  });

  test('property: arbitrary bodies, ids and queries never yield a 500 and never store a bundle', async () => {
    const d = new Device(fx.app, `fuzz-${randomUUID()}`);
    await d.connect(false);
    const staging = await d.json('POST', '/sync/push-sessions', {
      source_bundle_id: 1,
      planned_row_count: 2,
    });
    const pushId = staging.body['push_id'] as string;
    const counts = async () =>
      (
        await fx.cluster.query<{ n: string }>(
          `SELECT ((SELECT count(*) FROM sync.bundle_log) + (SELECT count(*) FROM sync.bundle_rows)
                 + (SELECT count(*) FROM sync.push_session_chunks) + (SELECT count(*) FROM business.users))::text AS n`,
        )
      ).rows[0]!.n;
    const before = await counts();
    const fieldNames = [
      'source_bundle_id',
      'planned_row_count',
      'initialization_id',
      'start_row_ordinal',
      'rows',
      'has_local_pending_rows',
      'schema',
      'table',
      'key',
      'op',
      'base_row_version',
      'payload',
    ];
    const anyValue = fc.oneof(
      fc.jsonValue(),
      fc.constantFrom('INSERT', 'business', 'users', randomUUID(), '', -1, 0, Number.MAX_VALUE),
    );
    const looseObject = fc.dictionary(fc.oneof(fc.constantFrom(...fieldNames), fc.string()), anyValue);
    const rowish = fc.record(
      {
        schema: anyValue,
        table: anyValue,
        key: fc.oneof(anyValue, fc.record({ id: anyValue })),
        op: anyValue,
        base_row_version: anyValue,
        payload: fc.oneof(anyValue, looseObject),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      fc.string(),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      looseObject.map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            start_row_ordinal: fc.oneof(anyValue, fc.constant(0)),
            rows: fc.oneof(anyValue, fc.array(rowish, { maxLength: 3 })),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
    );
    const target = fc.constantFrom(
      ['POST', '/sync/connect'],
      ['POST', '/sync/push-sessions'],
      ['POST', `/sync/push-sessions/${pushId}/chunks`],
      ['POST', `/sync/push-sessions/${pushId}/commit`],
      ['POST', '/sync/snapshot-sessions'],
    ) as fc.Arbitrary<['POST', string]>;
    const idish = fc.oneof(
      fc.string(),
      fc.uuid(),
      fc.constantFrom('%00', '..', '-1', '99999999999999999999999'),
    );
    await fc.assert(
      fc.asyncProperty(target, body, idish, fc.string(), async ([method, url], payload, id, q) => {
        const r1 = await d.req(method, url, payload);
        expect(r1.statusCode, `${url} ${payload} -> ${r1.body}`).toBeLessThan(500);
        expect(r1.headers['content-type']).toMatch(/^application\/json/);
        const enc = encodeURIComponent(id);
        for (const [m, u] of [
          ['POST', `/sync/push-sessions/${enc}/chunks`],
          ['POST', `/sync/push-sessions/${enc}/commit`],
          ['DELETE', `/sync/push-sessions/${enc}`],
          ['GET', `/sync/committed-bundles/${enc}/rows?after_row_ordinal=${encodeURIComponent(q)}`],
          ['GET', `/sync/pull?after_bundle_seq=${encodeURIComponent(q)}&max_bundles=${enc}`],
        ] as const) {
          const r = await d.req(m, u, m === 'POST' ? payload : undefined);
          expect(r.statusCode, `${m} ${u} -> ${r.body}`).toBeLessThan(500);
        }
      }),
      { numRuns: 60 },
    );
    expect(await counts()).toBe(before);
  });
});

describe('cancellation and lifecycle', () => {
  test('an aborted signal rejects before touching the database', async () => {
    const ac = new AbortController();
    ac.abort(new Error('gone'));
    await expect(fx.service.pull({ userId: 'u', sourceId: 's' }, {}, { signal: ac.signal })).rejects.toThrow(
      'gone',
    );
    await expect(
      fx.service.connect(
        { userId: 'u', sourceId: 's' },
        { has_local_pending_rows: false },
        { signal: ac.signal },
      ),
    ).rejects.toThrow('gone');
  });
});

describe('database failures', () => {
  test('each endpoint answers its own 500 code with a generic message, never database details', async () => {
    const local = await createFixture({ service: { bundleChangeWatch: { enabled: true } } });
    try {
      const d = new Device(local.app, `dbfail-${randomUUID()}`);
      await d.connect(false);
      const created = await d.json('POST', '/sync/push-sessions', {
        source_bundle_id: 1,
        planned_row_count: 1,
      });
      const snap = await d.json('POST', '/sync/snapshot-sessions');
      await local.cluster.close(); // every query fails from here on
      const pushId = created.body['push_id'] as string;
      const snapId = snap.body['snapshot_id'] as string;
      const cases: Array<[string, 'GET' | 'POST' | 'DELETE', string, unknown?]> = [
        ['connect_failed', 'POST', '/sync/connect', { has_local_pending_rows: false }],
        [
          'push_session_create_failed',
          'POST',
          '/sync/push-sessions',
          { source_bundle_id: 2, planned_row_count: 1 },
        ],
        [
          'push_chunk_failed',
          'POST',
          `/sync/push-sessions/${pushId}/chunks`,
          { start_row_ordinal: 0, rows: [userRow(randomUUID(), 'x')] },
        ],
        ['push_session_commit_failed', 'POST', `/sync/push-sessions/${pushId}/commit`],
        ['push_session_delete_failed', 'DELETE', `/sync/push-sessions/${pushId}`],
        ['committed_bundle_rows_failed', 'GET', '/sync/committed-bundles/1/rows'],
        ['pull_failed', 'GET', '/sync/pull'],
        ['bundle_change_watch_failed', 'GET', '/sync/watch'],
        ['snapshot_session_create_failed', 'POST', '/sync/snapshot-sessions'],
        ['snapshot_chunk_failed', 'GET', `/sync/snapshot-sessions/${snapId}`],
        ['snapshot_session_delete_failed', 'DELETE', `/sync/snapshot-sessions/${snapId}`],
      ];
      for (const [code, method, url, body] of cases) {
        const r = await d.json(method, url, body);
        expect(r, code).toMatchObject({ status: 500, body: { error: code } });
        expect(JSON.stringify(r.body)).not.toMatch(/DBX_|pool|closed|sql/i);
      }
      const status = await local.app.inject({ method: 'GET', url: '/syncx/status' });
      expect(status.statusCode).toBe(500);
      expect(status.json()).toMatchObject({ error: 'status_failed' });
      const health = await local.app.inject({ method: 'GET', url: '/syncx/health' });
      expect(health.json()).toMatchObject({ error: 'health_failed' });
    } finally {
      await local.close();
    }
  });
});
