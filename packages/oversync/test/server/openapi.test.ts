/**
 * The OpenAPI document against the routes (issue #18): it is a valid OpenAPI 3.1 document; it
 * lists exactly the (method, path) pairs fastify registers; and real requests against a real
 * server (PostgreSQL from @x/testkit) produce every status it documents for every operation, each
 * body valid against the documented schema of its status. An answer whose status is not
 * documented, or whose body does not match, fails; so does a documented status no request produced.
 */
import { Validator } from '@seriousme/openapi-schema-validator';
import { type Cluster, createCluster } from '@x/dbx';
import {
  createSyncService,
  type OpenApiDocument,
  oversyncFastifyPlugin,
  oversyncFrameworkErrors,
  oversyncOpenApiDocument,
  type SyncService,
} from '@x/oversync/server';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { BUSINESS_SCHEMA_SQL, BUSINESS_TABLES, Device, randomUUID, userRow } from './fixture.js';

const BODY_LIMIT = 16 * 1024;
const BIG_BODY = JSON.stringify({ pad: 'x'.repeat(BODY_LIMIT + 1) });
const doc = oversyncOpenApiDocument();

interface Server {
  app: FastifyInstance;
  service: SyncService;
  cluster: Cluster;
  /** `METHOD /path/{param}` of every route fastify registered. */
  routes: string[];
}

/** A sync service and a fastify app on `db`, recording every route fastify registers. */
async function startServer(db: TestDatabase, prefix = ''): Promise<Server> {
  const cluster = createCluster({ primary: { connectionString: db.url, options: '-c TimeZone=UTC' } });
  const service = createSyncService({
    db: cluster,
    registeredTables: BUSINESS_TABLES,
    bundleChangeWatch: { enabled: true, heartbeatIntervalMs: 60_000 },
  });
  await service.bootstrap();
  const app = Fastify({ logger: false, frameworkErrors: oversyncFrameworkErrors });
  const routes: string[] = [];
  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat()) routes.push(`${m} ${r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`);
  });
  await app.register(oversyncFastifyPlugin, {
    service,
    userIdFromRequest: (req) => req.headers['x-test-user'] as string | undefined,
    bundleChangeWatchAllowed: (_req, actor) => !actor.sourceId.startsWith('no-watch'),
    bodyLimit: BODY_LIMIT,
    ...(prefix ? { prefix } : {}),
  });
  await app.ready();
  return { app, service, cluster, routes };
}

/** The documented operations: `METHOD /path`. */
function documentedOperations(d: OpenApiDocument): string[] {
  return Object.entries(d.paths).flatMap(([path, item]) =>
    Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`),
  );
}

/** What fastify registered, less the `HEAD` it adds for every `GET` (which the document leaves out). */
function registeredOperations(routes: readonly string[]): string[] {
  const set = new Set(routes);
  return [...set].filter((r) => !(r.startsWith('HEAD ') && set.has(`GET ${r.slice(5)}`)));
}

// --- every answer checked against the document, and which (operation, status) were seen ---

const ajv = new Ajv2020({ strict: false, allErrors: true });
const validators = new Map<object, ValidateFunction>();
function validatorOf(schema: object): ValidateFunction {
  let v = validators.get(schema);
  if (!v) {
    v = ajv.compile(schema);
    validators.set(schema, v);
  }
  return v;
}
const seen = new Set<string>();
const templates = Object.keys(doc.paths).map((p) => ({
  path: p,
  re: new RegExp(`^${p.replace(/\{[^}]+\}/g, '[^/]+')}$`),
}));

/** The documented response of `method url` at `status` (the test fails when there is none). */
function documented(method: string, url: string, status: number) {
  const path = url.split('?')[0]!;
  const t = templates.find((x) => x.re.test(path));
  expect(t, `${method} ${path} is not in the document`).toBeDefined();
  const op = doc.paths[t!.path]![method.toLowerCase()];
  expect(op, `${method} ${t!.path} is not in the document`).toBeDefined();
  const response = op!.responses[String(status)];
  expect(response, `${method} ${t!.path} answered ${status}, not documented`).toBeDefined();
  seen.add(`${method} ${t!.path} ${status}`);
  return response!;
}

/** Checks a JSON answer against the document. */
function check(method: string, url: string, status: number, body: string, contentType: string | undefined) {
  const response = documented(method, url, status);
  if (!response.content) {
    expect(body, `${method} ${url} ${status} has no documented body`).toBe('');
    return;
  }
  const media = response.content['application/json'];
  expect(media, `${method} ${url} ${status}: JSON not documented`).toBeDefined();
  expect(contentType).toMatch(/^application\/json/);
  const validate = validatorOf(media!['schema'] as object);
  const value: unknown = JSON.parse(body);
  expect(validate(value), `${method} ${url} ${status} ${body}: ${ajv.errorsText(validate.errors)}`).toBe(
    true,
  );
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH';
interface Call {
  user?: string;
  source?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

/** One request through the app, checked against the document; returns status and parsed body. */
async function call(app: FastifyInstance, method: Method, url: string, c: Call = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...c.headers };
  if (c.user !== undefined) headers['x-test-user'] = c.user;
  if (c.source !== undefined) headers['oversync-source-id'] = c.source;
  const res = await app.inject({
    method,
    url,
    headers,
    ...(c.body === undefined
      ? {}
      : { payload: typeof c.body === 'string' ? c.body : JSON.stringify(c.body) }),
  });
  check(method, url, res.statusCode, res.body, res.headers['content-type'] as string | undefined);
  return {
    status: res.statusCode,
    body: (res.body ? JSON.parse(res.body) : undefined) as Record<string, unknown>,
  };
}

/** `call` for a device (its user and source). */
const as = (d: Device, method: Method, url: string, c: Call = {}) =>
  call(d.app, method, url, { user: d.userId, source: d.sourceId, ...c });

let db: TestDatabase;
let main: Server;
beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'oversync' });
  const setup = createCluster({ primary: { connectionString: db.url } });
  await setup.exec(BUSINESS_SCHEMA_SQL);
  await setup.close();
  main = await startServer(db);
});
afterAll(async () => {
  await main?.app.close();
  await main?.service.close();
  await main?.cluster.close();
  await db?.drop();
});

describe('the OpenAPI document', () => {
  test('is a valid OpenAPI 3.1 document', async () => {
    const res = await new Validator().validate(structuredClone(doc) as unknown as Record<string, unknown>);
    expect(res.errors).toBeUndefined();
    expect(res.valid).toBe(true);
    // every schema in it compiles as JSON Schema 2020-12
    for (const item of Object.values(doc.paths))
      for (const op of Object.values(item))
        for (const r of Object.values(op.responses))
          for (const media of Object.values(r.content ?? {})) validatorOf(media['schema'] as object);
  });

  test('lists exactly the routes fastify registers, with and without a prefix', async () => {
    expect(registeredOperations(main.routes).sort()).toEqual(documentedOperations(doc).sort());
    const prefixed = await startServer(db, '/api/v1');
    try {
      const served = await prefixed.app.inject({ method: 'GET', url: '/api/v1/sync/openapi.json' });
      expect(served.statusCode).toBe(200);
      const prefixedDoc = oversyncOpenApiDocument({ prefix: '/api/v1' });
      expect(served.json()).toEqual(prefixedDoc);
      expect(registeredOperations(prefixed.routes).sort()).toEqual(documentedOperations(prefixedDoc).sort());
    } finally {
      await prefixed.app.close();
      await prefixed.service.close();
      await prefixed.cluster.close();
    }
  });

  test('is served at GET /sync/openapi.json without authentication', async () => {
    const res = await call(main.app, 'GET', '/sync/openapi.json');
    expect(res.body).toEqual(doc);
  });
});

describe('every documented status of every operation, from real requests', () => {
  const sql = (text: string, params: unknown[]) => main.cluster.query(text, params);
  const user = () => `oa-${randomUUID().slice(0, 8)}`;
  /** A device whose connect took the initialization lease of its scope, the lease expired since. */
  async function expiredLease() {
    const initializer = new Device(main.app, user());
    const lease = await initializer.connect(true);
    await sql(
      `UPDATE sync.scope_state SET lease_expires_at = now() - interval '1 second'
        WHERE user_pk = (SELECT user_pk FROM sync.user_state WHERE user_id = $1)`,
      [initializer.userId],
    );
    return { initializer, lease };
  }

  test('connect and capabilities', async () => {
    const d = new Device(main.app, user());
    expect((await as(d, 'POST', '/sync/connect', { body: { has_local_pending_rows: false } })).status).toBe(
      200,
    );
    expect((await as(d, 'POST', '/sync/connect', { body: 'not json' })).status).toBe(400);
    expect((await call(main.app, 'POST', '/sync/connect', { source: 's', body: {} })).status).toBe(401);
    expect((await as(d, 'POST', '/sync/connect', { body: BIG_BODY })).status).toBe(413);
    expect((await as(d, 'GET', '/sync/capabilities')).status).toBe(200);
    expect((await call(main.app, 'GET', '/sync/capabilities', { user: d.userId })).status).toBe(400);
    expect((await call(main.app, 'GET', '/sync/capabilities', { source: 's' })).status).toBe(401);
  });

  test('push sessions: create, chunks, commit, delete', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    const other = new Device(main.app, user());
    await other.connect(false);
    const create = (dev: Device, c: Call = {}) =>
      as(dev, 'POST', '/sync/push-sessions', { body: { source_bundle_id: 1, planned_row_count: 1 }, ...c });

    // create
    const s = await create(d);
    expect(s.body['status']).toBe('staging');
    const pushId = s.body['push_id'] as string;
    expect((await create(d, { body: { source_bundle_id: 0, planned_row_count: 1 } })).status).toBe(400);
    expect((await create(d, { user: '' })).status).toBe(401);
    expect((await create(d, { body: { source_bundle_id: 7, planned_row_count: 1 } })).body['error']).toBe(
      'source_sequence_out_of_order',
    );
    expect((await create(d, { body: BIG_BODY })).status).toBe(413);
    const { initializer, lease } = await expiredLease();
    const refused = await create(initializer, {
      body: { source_bundle_id: 1, planned_row_count: 1, initialization_id: lease.body['initialization_id'] },
    });
    expect(refused.status).toBe(410);

    // chunks
    const chunks = `/sync/push-sessions/${pushId}/chunks`;
    const row = userRow(randomUUID(), 'ann');
    expect((await as(d, 'POST', chunks, { body: { start_row_ordinal: 3, rows: [row] } })).status).toBe(409);
    expect((await as(d, 'POST', chunks, { body: { start_row_ordinal: 0, rows: [] } })).status).toBe(400);
    expect(
      (await as(d, 'POST', chunks, { user: '', body: { start_row_ordinal: 0, rows: [row] } })).status,
    ).toBe(401);
    expect((await as(other, 'POST', chunks, { body: { start_row_ordinal: 0, rows: [row] } })).status).toBe(
      403,
    );
    const unknown = `/sync/push-sessions/${randomUUID()}`;
    expect(
      (await as(d, 'POST', `${unknown}/chunks`, { body: { start_row_ordinal: 0, rows: [row] } })).status,
    ).toBe(404);
    expect((await as(d, 'POST', chunks, { body: BIG_BODY })).status).toBe(413);
    expect((await as(d, 'POST', chunks, { body: { start_row_ordinal: 0, rows: [row] } })).status).toBe(200);

    // commit
    const commit = `/sync/push-sessions/${pushId}/commit`;
    expect((await as(d, 'POST', commit, { source: '' })).status).toBe(400);
    expect((await as(d, 'POST', commit, { user: '' })).status).toBe(401);
    expect((await as(other, 'POST', commit)).status).toBe(403);
    expect((await as(d, 'POST', `${unknown}/commit`)).status).toBe(404);
    expect((await as(d, 'POST', commit, { body: BIG_BODY })).status).toBe(413);
    expect((await as(d, 'POST', commit)).status).toBe(200);
    // the same row inserted again conflicts
    const again = await create(d, { body: { source_bundle_id: 2, planned_row_count: 1 } });
    const againId = again.body['push_id'] as string;
    await as(d, 'POST', `/sync/push-sessions/${againId}/chunks`, {
      body: { start_row_ordinal: 0, rows: [row] },
    });
    const conflict = await as(d, 'POST', `/sync/push-sessions/${againId}/commit`);
    expect(conflict).toMatchObject({ status: 409, body: { error: 'push_conflict' } });
    // planned two rows, uploaded none: incomplete staging
    const incomplete = await create(d, { body: { source_bundle_id: 2, planned_row_count: 2 } });
    const incompleteUrl = `/sync/push-sessions/${incomplete.body['push_id']}`;
    expect((await as(d, 'POST', `${incompleteUrl}/commit`)).body['error']).toBe('push_commit_invalid');

    // delete (and the expired session's 410 on every route of a session)
    expect((await as(d, 'DELETE', incompleteUrl, { source: '' })).status).toBe(400);
    expect((await as(d, 'DELETE', incompleteUrl, { user: '' })).status).toBe(401);
    expect((await as(other, 'DELETE', incompleteUrl)).status).toBe(403);
    expect((await as(d, 'DELETE', unknown)).status).toBe(404);
    expect((await as(d, 'DELETE', incompleteUrl, { body: BIG_BODY })).status).toBe(413);
    await sql("UPDATE sync.push_sessions SET expires_at = now() - interval '1 second' WHERE push_id = $1", [
      incomplete.body['push_id'],
    ]);
    expect(
      (await as(d, 'POST', `${incompleteUrl}/chunks`, { body: { start_row_ordinal: 0, rows: [row] } }))
        .status,
    ).toBe(410);
    expect((await as(d, 'POST', `${incompleteUrl}/commit`)).status).toBe(410);
    expect((await as(d, 'DELETE', incompleteUrl)).status).toBe(410);
    const last = await create(d, { body: { source_bundle_id: 2, planned_row_count: 1 } });
    expect((await as(d, 'DELETE', `/sync/push-sessions/${last.body['push_id']}`)).status).toBe(204);
  });

  test('one-request push', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    const push = (dev: Device, body: unknown, c: Call = {}) => as(dev, 'POST', '/sync/push', { body, ...c });
    const row = userRow(randomUUID(), 'one');
    const first = await push(d, { source_bundle_id: 1, rows: [row] });
    expect(first).toMatchObject({
      status: 200,
      body: { status: 'committed', source_bundle_id: 1, row_count: 1 },
    });
    // the same source bundle again: the committed one, as a replay
    expect((await push(d, { source_bundle_id: 1, rows: [row] })).body).toEqual({
      ...first.body,
      status: 'already_committed',
    });
    expect((await push(d, { source_bundle_id: 2, rows: [] })).status).toBe(400);
    expect((await push(d, { source_bundle_id: 2, rows: [row] }, { user: '' })).status).toBe(401);
    expect((await push(d, { source_bundle_id: 2, rows: [row] })).body['error']).toBe('push_conflict');
    expect((await push(d, { source_bundle_id: 9, rows: [row] })).body['error']).toBe(
      'source_sequence_out_of_order',
    );
    expect((await push(d, BIG_BODY)).status).toBe(413);
    const { initializer, lease } = await expiredLease();
    const expired = await push(initializer, {
      source_bundle_id: 1,
      rows: [userRow(randomUUID(), 'two')],
      initialization_id: lease.body['initialization_id'],
    });
    expect(expired.status).toBe(410);
  });

  test('pull and committed bundle rows', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    expect((await d.push([userRow(randomUUID(), 'one')])).status).toBe(200);
    expect((await d.push([userRow(randomUUID(), 'two')])).status).toBe(200);
    const stranger = new Device(main.app, user());

    expect((await as(d, 'GET', '/sync/pull?after_bundle_seq=0&max_bundles=10')).status).toBe(200);
    expect((await as(d, 'GET', '/sync/pull?max_bundles=0')).status).toBe(400);
    expect((await as(d, 'GET', '/sync/pull', { user: '' })).status).toBe(401);
    expect((await as(stranger, 'GET', '/sync/pull')).body['error']).toBe('scope_uninitialized');

    const rows = '/sync/committed-bundles/1/rows';
    expect((await as(d, 'GET', `${rows}?max_rows=1`)).status).toBe(200);
    expect((await as(d, 'GET', '/sync/committed-bundles/0/rows')).status).toBe(400);
    expect((await as(d, 'GET', rows, { user: '' })).status).toBe(401);
    expect((await as(d, 'GET', '/sync/committed-bundles/99/rows')).status).toBe(404);
    await sql('UPDATE sync.user_state SET retained_bundle_floor = 1 WHERE user_id = $1', [d.userId]);
    expect((await as(d, 'GET', rows)).body['error']).toBe('history_pruned');
  });

  test('watch', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    expect((await d.push([userRow(randomUUID(), 'watched')])).status).toBe(200); // the catch-up event
    expect((await as(d, 'GET', '/sync/watch?after_bundle_seq=x')).status).toBe(400);
    expect((await as(d, 'GET', '/sync/watch', { user: '' })).status).toBe(401);
    expect((await as(d, 'GET', '/sync/watch', { source: 'no-watch-1' })).status).toBe(403);
    expect((await as(new Device(main.app, user()), 'GET', '/sync/watch')).status).toBe(409);

    // the stream itself, over a real connection
    const url = await main.app.listen({ port: 0, host: '127.0.0.1' });
    const ac = new AbortController();
    try {
      const res = await fetch(`${url}/sync/watch?after_bundle_seq=0`, {
        headers: { 'x-test-user': d.userId, 'oversync-source-id': d.sourceId },
        signal: ac.signal,
      });
      const media = documented('GET', '/sync/watch', res.status).content?.['text/event-stream'];
      expect(res.headers.get('content-type')).toBe('text/event-stream');
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      while (!text.includes('\n\n')) text += (await reader.read()).value ?? '';
      const frame = text.slice(0, text.indexOf('\n\n'));
      expect(frame).toMatch(/^event: bundle\ndata: /);
      const validate = validatorOf(media!['x-oversync-event-data'] as object);
      const data: unknown = JSON.parse(frame.slice(frame.indexOf('data: ') + 6));
      expect(validate(data), ajv.errorsText(validate.errors)).toBe(true);
    } finally {
      ac.abort();
    }
  });

  test('snapshot sessions', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    expect((await d.push([userRow(randomUUID(), 'snap')])).status).toBe(200);
    const other = new Device(main.app, user());
    await other.connect(false);
    const create = (dev: Device, c: Call = {}) => as(dev, 'POST', '/sync/snapshot-sessions', c);

    const s = await create(d);
    expect(s.status).toBe(200);
    const bad = {
      source_replacement: { previous_source_id: 'not-mine', new_source_id: 'n', reason: 'history_pruned' },
    };
    expect((await create(d, { body: bad })).body['error']).toBe('snapshot_session_invalid');
    expect((await create(d, { user: '' })).status).toBe(401);
    expect((await create(new Device(main.app, user()))).body['error']).toBe('scope_uninitialized');
    expect((await create(d, { body: BIG_BODY })).status).toBe(413);

    const url = `/sync/snapshot-sessions/${s.body['snapshot_id']}`;
    const unknown = `/sync/snapshot-sessions/${randomUUID()}`;
    expect((await as(d, 'GET', `${url}?max_rows=1`)).status).toBe(200);
    expect((await as(d, 'GET', `${url}?max_rows=0`)).status).toBe(400);
    expect((await as(d, 'GET', url, { user: '' })).status).toBe(401);
    expect((await as(other, 'GET', url)).status).toBe(403);
    expect((await as(d, 'GET', unknown)).status).toBe(404);

    expect((await as(d, 'DELETE', url, { source: '' })).status).toBe(400);
    expect((await as(d, 'DELETE', url, { user: '' })).status).toBe(401);
    expect((await as(other, 'DELETE', url)).status).toBe(403);
    expect((await as(d, 'DELETE', unknown)).status).toBe(404);
    expect((await as(d, 'DELETE', url, { body: BIG_BODY })).status).toBe(413);
    await sql(
      "UPDATE sync.snapshot_sessions SET expires_at = now() - interval '1 second' WHERE snapshot_id = $1",
      [s.body['snapshot_id']],
    );
    expect((await as(d, 'GET', url)).status).toBe(410);
    expect((await as(d, 'DELETE', url)).status).toBe(204);
  });

  test('status and health', async () => {
    expect((await call(main.app, 'GET', '/syncx/status')).status).toBe(200);
    expect((await call(main.app, 'GET', '/syncx/health')).status).toBe(200);
  });

  test('a wrong method on every known path: 405, and the body limit and a malformed body first', async () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      const url = path.replace(/\{[^}]+\}/g, randomUUID());
      for (const [m, op] of Object.entries(item)) {
        if (op.operationId) continue;
        const method = m.toUpperCase() as Method;
        expect((await call(main.app, method, url)).status).toBe(405);
        if (method === 'GET') continue;
        expect((await call(main.app, method, url, { body: BIG_BODY })).status).toBe(413);
        // a Content-Length the body does not match
        expect(
          (await call(main.app, method, url, { body: '{}', headers: { 'content-length': '10' } })).status,
        ).toBe(400);
      }
    }
  });

  test('500: the database gone (every query fails)', async () => {
    const broken = await startServer(db);
    const d = new Device(broken.app, user());
    try {
      await d.connect(false);
      const push = await d.json('POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: 1 });
      const snap = await d.json('POST', '/sync/snapshot-sessions');
      await broken.cluster.close();
      const pushUrl = `/sync/push-sessions/${push.body['push_id']}`;
      const snapUrl = `/sync/snapshot-sessions/${snap.body['snapshot_id']}`;
      const cases: Array<[Method, string, unknown?]> = [
        ['POST', '/sync/connect', { has_local_pending_rows: false }],
        ['POST', '/sync/push-sessions', { source_bundle_id: 2, planned_row_count: 1 }],
        ['POST', `${pushUrl}/chunks`, { start_row_ordinal: 0, rows: [userRow(randomUUID(), 'x')] }],
        ['POST', `${pushUrl}/commit`],
        ['POST', '/sync/push', { source_bundle_id: 2, rows: [userRow(randomUUID(), 'x')] }],
        ['DELETE', pushUrl],
        ['GET', '/sync/committed-bundles/1/rows'],
        ['GET', '/sync/pull'],
        ['GET', '/sync/watch'],
        ['POST', '/sync/snapshot-sessions'],
        ['GET', snapUrl],
        ['DELETE', snapUrl],
      ];
      for (const [method, url, body] of cases)
        expect(
          (await as(d, method, url, body === undefined ? {} : { body })).status,
          `${method} ${url}`,
        ).toBe(500);
      expect((await call(broken.app, 'GET', '/syncx/status')).status).toBe(500);
      expect((await call(broken.app, 'GET', '/syncx/health')).status).toBe(500);
    } finally {
      await broken.app.close();
      await broken.service.close();
    }
  });

  test('503: the service closing', async () => {
    const d = new Device(main.app, user());
    await d.connect(false);
    await main.service.close();
    const id = randomUUID();
    const cases: Array<[Method, string, unknown?]> = [
      ['POST', '/sync/connect', { has_local_pending_rows: false }],
      ['POST', '/sync/push-sessions', { source_bundle_id: 1, planned_row_count: 1 }],
      [
        'POST',
        `/sync/push-sessions/${id}/chunks`,
        { start_row_ordinal: 0, rows: [userRow(randomUUID(), 'x')] },
      ],
      ['POST', `/sync/push-sessions/${id}/commit`],
      ['POST', '/sync/push', { source_bundle_id: 1, rows: [userRow(randomUUID(), 'x')] }],
      ['DELETE', `/sync/push-sessions/${id}`],
      ['GET', '/sync/committed-bundles/1/rows'],
      ['GET', '/sync/pull'],
      ['GET', '/sync/watch'],
      ['POST', '/sync/snapshot-sessions'],
      ['GET', `/sync/snapshot-sessions/${id}`],
      ['DELETE', `/sync/snapshot-sessions/${id}`],
    ];
    for (const [method, url, body] of cases)
      expect((await as(d, method, url, body === undefined ? {} : { body })).status, `${method} ${url}`).toBe(
        503,
      );
    expect((await call(main.app, 'GET', '/syncx/health')).status).toBe(503);
    expect((await call(main.app, 'GET', '/syncx/status')).body['lifecycle']).toBe('closed');
  });

  test('every documented status of every operation was answered', () => {
    const missing: string[] = [];
    for (const [path, item] of Object.entries(doc.paths))
      for (const [m, op] of Object.entries(item))
        for (const status of Object.keys(op.responses))
          if (!seen.has(`${m.toUpperCase()} ${path} ${status}`))
            missing.push(`${m.toUpperCase()} ${path} ${status}`);
    expect(missing).toEqual([]);
  });
});
