/**
 * Issue #14, "no 5xx for any client input": every route, driven through `inject()` with arbitrary
 * and hostile methods, identities, source ids, path ids, queries and bodies. Every response is
 * below 500; every error is JSON `{error, message}` with a documented code; a refused request
 * changes nothing in the database; afterwards a valid push still commits.
 *
 * Seeded: the seed is printed; replay with `OVERSYNC_FUZZ_SEED=<seed>` (runs: `OVERSYNC_FUZZ_RUNS`).
 */
import { oversyncFastifyPlugin, oversyncFrameworkErrors, WIRE_ERROR_CODES } from '@x/oversync/server';
import fc from 'fast-check';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  createFixture,
  Device,
  type Fixture,
  insertRow,
  nextTraced,
  randomUUID,
  userRow,
} from '../fixture.js';

const SEED = Number(process.env.OVERSYNC_FUZZ_SEED ?? Date.now() % 2_147_483_647);
const RUNS = Number(process.env.OVERSYNC_FUZZ_RUNS ?? 1000);

let fx: Fixture;
/** The plugin again, with the user id taken percent-decoded from `x-test-user` (so it can hold anything). */
let app: FastifyInstance;
beforeAll(async () => {
  fx = await createFixture({
    bodyLimit: 2 * 1024 * 1024,
    service: { bundleChangeWatch: { enabled: true }, limits: { maxRowsPerPushChunk: 20 } },
  });
  app = Fastify({ logger: false, frameworkErrors: oversyncFrameworkErrors });
  await app.register(oversyncFastifyPlugin, {
    service: fx.service,
    bodyLimit: 2 * 1024 * 1024,
    userIdFromRequest: (req) => {
      const h = req.headers['x-test-user'];
      return typeof h === 'string' ? decodeURIComponent(h) : undefined;
    },
  });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
  await fx?.close();
});

/** Everything a request could change. */
async function digest(): Promise<string> {
  const r = await fx.cluster.query<{ d: string }>(
    `SELECT concat_ws(',',
       (SELECT count(*) || ':' || coalesce(sum(next_bundle_seq), 0) || ':' || coalesce(sum(retained_bundle_floor), 0) FROM sync.user_state),
       (SELECT count(*) || ':' || coalesce(sum(state_code), 0) FROM sync.scope_state),
       (SELECT count(*) || ':' || coalesce(sum(max_committed_source_bundle_id), 0) FROM sync.source_state),
       (SELECT count(*) FROM sync.bundle_log), (SELECT count(*) FROM sync.bundle_rows),
       (SELECT count(*) || ':' || coalesce(sum(bundle_seq), 0) FROM sync.row_state),
       (SELECT count(*) || ':' || coalesce(sum(next_expected_row_ordinal), 0) FROM sync.push_sessions),
       (SELECT count(*) FROM sync.push_session_chunks), (SELECT count(*) FROM sync.snapshot_sessions),
       (SELECT count(*) FROM business.users), (SELECT count(*) FROM business.posts),
       (SELECT count(*) FROM business.typed_rows)) AS d`,
  );
  return r.rows[0]!.d;
}

const USER = `fuzz-${randomUUID()}`;
const SOURCE = 'fuzz-source';
const CODES: ReadonlySet<string> = new Set(WIRE_ERROR_CODES);
const BIG = 'x'.repeat(1024 * 1024);

const ROUTES: ReadonlyArray<readonly [string, string]> = [
  ['POST', '/sync/connect'],
  ['POST', '/sync/push-sessions'],
  ['POST', '/sync/push-sessions/:push/chunks'],
  ['POST', '/sync/push-sessions/:push/commit'],
  ['DELETE', '/sync/push-sessions/:push'],
  ['GET', '/sync/committed-bundles/:seq/rows'],
  ['GET', '/sync/pull'],
  ['GET', '/sync/watch'],
  ['POST', '/sync/snapshot-sessions'],
  ['GET', '/sync/snapshot-sessions/:snap'],
  ['DELETE', '/sync/snapshot-sessions/:snap'],
  ['GET', '/sync/capabilities'],
  ['GET', '/syncx/status'],
  ['GET', '/syncx/health'],
];

describe('fuzz: every route, hostile input', () => {
  test('no response >= 500, errors are documented JSON, refused requests change nothing, a valid push still commits', async () => {
    console.log(`[fuzz-routes] seed ${SEED}, ${RUNS} runs (replay: OVERSYNC_FUZZ_SEED=${SEED})`);
    const d = new Device(app, USER, SOURCE);
    d.headers = () => ({
      'x-test-user': USER,
      'oversync-source-id': SOURCE,
      'content-type': 'application/json',
    });
    await d.connect(false);
    expect((await d.push([userRow(randomUUID(), 'seed')])).status).toBe(200);
    const staging = await d.json('POST', '/sync/push-sessions', {
      source_bundle_id: 2,
      planned_row_count: 3,
    });
    const pushId = staging.body['push_id'] as string;
    const snap = await d.json('POST', '/sync/snapshot-sessions');
    const snapId = snap.body['snapshot_id'] as string;

    const hostileString = fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.constantFrom(
        '',
        ' ',
        '\u0000',
        'a\u0000b',
        '\ud800',
        'x'.repeat(3200),
        '%00',
        '..',
        '💥'.repeat(300),
      ),
    );
    const identity = fc.oneof(
      { weight: 6, arbitrary: fc.constant(USER) },
      { weight: 1, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.uuid().map((u) => `fresh-${u}`) },
      { weight: 2, arbitrary: hostileString },
    );
    const headerSafe = (s: string) => s.replace(/[^\x20-\x7e]/g, '?');
    // One path segment; dot segments would address another path (not one of these routes).
    const segment = (s: string, empty: string) =>
      /^\.{1,2}$/.test(headerSafe(s)) ? 'dot' : encodeURIComponent(headerSafe(s)) || empty;
    const source = fc.oneof(
      { weight: 6, arbitrary: fc.constant(SOURCE) },
      { weight: 1, arbitrary: fc.constant(undefined) },
      { weight: 2, arbitrary: hostileString.map(headerSafe) },
      { weight: 1, arbitrary: fc.constantFrom('s'.repeat(3000), 's'.repeat(600)) },
    );
    const number = fc.oneof(
      fc.integer(),
      fc.constantFrom(0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 63, 1e308, -1e308, 0.5, Number.MAX_SAFE_INTEGER),
    );
    const numberText = fc.oneof(
      number.map(String),
      fc.constantFrom('99999999999999999999999999', '9007199254740993', '-0', '+5', '1e5', '0x10', ' 1', ''),
      hostileString,
    );
    const query = fc
      .array(
        fc.tuple(
          fc.constantFrom(
            'after_bundle_seq',
            'max_bundles',
            'target_bundle_seq',
            'after_row_ordinal',
            'max_rows',
            'x',
          ),
          numberText,
        ),
        { maxLength: 4 },
      )
      .map((kv) => kv.map(([k, v]) => `${k}=${encodeURIComponent(headerSafe(v))}`).join('&'));
    const pathId = fc.oneof(
      fc.constant(pushId),
      fc.constant(snapId),
      fc.uuid(),
      numberText.map((s) => segment(s, '0')),
      fc.constant('a'.repeat(5000)),
    );
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const hostileValue = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      number,
      hostileString,
      fc.constantFrom('not-a-uuid', '2026-13-45', 'NaN', '1e999', BIG.slice(0, 100_000)),
      fc.constant(JSON.parse(deep(200)) as unknown),
    );
    const row = fc.record(
      {
        schema: fc.oneof(fc.constant('business'), hostileString),
        table: fc.oneof(fc.constantFrom('users', 'posts', 'typed_rows', 'teams', 'files'), hostileString),
        key: fc.oneof(
          fc.uuid().map((id) => ({ id })),
          fc.record({ id: hostileValue }),
          hostileValue,
        ),
        op: fc.oneof(fc.constantFrom('INSERT', 'UPDATE', 'DELETE', 'insert'), hostileString),
        base_row_version: fc.oneof(fc.constant(0), number, hostileValue),
        payload: fc.oneof(
          fc.dictionary(
            fc.constantFrom(
              'id',
              'name',
              'email',
              'title',
              'content',
              'author_id',
              'count_value',
              'enabled_flag',
              'rating',
              'created_at',
              'data',
              '_sync_scope_id',
              'NAME',
            ),
            hostileValue,
          ),
          hostileValue,
        ),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      fc.constant(undefined),
      hostileString,
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.record({ has_local_pending_rows: hostileValue }, { requiredKeys: [] }).map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            source_bundle_id: fc.oneof(number, hostileValue),
            planned_row_count: fc.oneof(number, hostileValue),
            initialization_id: hostileValue,
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
      fc
        .record(
          {
            start_row_ordinal: fc.oneof(fc.constant(0), number, hostileValue),
            rows: fc.oneof(fc.array(row, { maxLength: 4 }), hostileValue),
          },
          { requiredKeys: [] },
        )
        .map((v) => JSON.stringify(v)),
      fc
        .record({
          source_replacement: fc.record(
            { previous_source_id: hostileValue, new_source_id: hostileValue, reason: hostileValue },
            { requiredKeys: [] },
          ),
        })
        .map((v) => JSON.stringify(v)),
      fc.constantFrom(
        deep(100_000),
        `{"rows":${deep(5000)}}`,
        `"${BIG}"`,
        '{"a":1}{"b":2}',
        '\u0000',
        'null',
      ),
    );
    const request = fc.record({
      route: fc.constantFrom(...ROUTES),
      wrongMethod: fc.oneof(
        { weight: 9, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.constantFrom('PUT', 'PATCH', 'GET', 'POST', 'DELETE') },
      ),
      user: identity,
      source,
      id: pathId,
      seq: numberText.map((s) => segment(s, '1')),
      query,
      body,
    });

    let requests = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 3 }), async (reqs) => {
        for (const r of reqs) {
          const [method, template] = r.route;
          const url = `${template.replace(':push', r.id).replace(':snap', r.id).replace(':seq', r.seq)}${r.query ? `?${r.query}` : ''}`;
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (r.user !== undefined) {
            let enc: string;
            try {
              enc = encodeURIComponent(r.user);
            } catch {
              enc = encodeURIComponent(r.user.replace(/[\ud800-\udfff]/g, '?')).concat('%ED%A0%80');
            }
            headers['x-test-user'] = enc;
          }
          if (r.source !== undefined) headers['oversync-source-id'] = r.source;
          const before = await digest();
          const m = (r.wrongMethod ?? method) as 'GET' | 'POST' | 'DELETE';
          // A watch that succeeds streams until closed: once its subscription is made (the service
          // traces it), leave the stream to app.close(); a refused watch answers at once.
          const subscribed =
            template === '/sync/watch' ? nextTraced('watch.subscribe', 'asyncEnd') : undefined;
          const inject = app.inject({
            method: m,
            url,
            headers,
            ...(r.body === undefined ? {} : { payload: r.body }),
          });
          let res: Awaited<typeof inject> | undefined;
          try {
            res = subscribed
              ? await Promise.race([inject, subscribed.promise.then(() => undefined)])
              : await inject;
          } finally {
            subscribed?.cancel();
          }
          requests++;
          if (res === undefined) continue;
          const where = `${m} ${url.slice(0, 200)} body ${String(r.body).slice(0, 200)} -> ${res.statusCode} ${res.body.slice(0, 300)}`;
          expect(res.statusCode, where).toBeLessThan(500);
          if (res.statusCode >= 400) {
            refused++;
            expect(res.headers['content-type'], where).toMatch(/^application\/json/);
            const b = JSON.parse(res.body) as Record<string, unknown>;
            expect(typeof b['message'], where).toBe('string');
            expect(CODES.has(b['error'] as string), where).toBe(true);
            expect(await digest(), `database changed by a refused request: ${where}`).toBe(before);
          }
        }
      }),
      { seed: SEED, numRuns: RUNS },
    );
    console.log(`[fuzz-routes] ${requests} requests, ${refused} refused`);

    // The server still serves: a valid push of a fresh device commits.
    const after = new Device(app, `after-${randomUUID()}`, 'after-source');
    after.headers = () => ({
      'x-test-user': after.userId,
      'oversync-source-id': 'after-source',
      'content-type': 'application/json',
    });
    await after.connect(false);
    const ok = await after.push([
      userRow(randomUUID(), 'after'),
      insertRow('posts', { id: randomUUID(), title: 't', content: 'c', author_id: null }),
    ]);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
  }, 120_000);
});

describe('request statement timeout', () => {
  test('a statement held past requestStatementTimeoutMs is 503 service_unavailable, and the server keeps serving', async () => {
    const local = await createFixture({ service: { limits: { requestStatementTimeoutMs: 300 } } });
    try {
      const d = new Device(local.app, `slow-${randomUUID()}`);
      await d.connect(false);
      const blocker = await local.cluster.begin();
      try {
        await blocker.query('LOCK TABLE sync.user_state IN ACCESS EXCLUSIVE MODE');
        const r = await d.pull(0);
        expect(r).toMatchObject({
          status: 503,
          body: { error: 'service_unavailable', message: 'pull exceeded the request statement timeout' },
        });
      } finally {
        await blocker.rollback();
      }
      expect((await d.pull(0)).status).toBe(200);
    } finally {
      await local.close();
    }
  });
});
