/**
 * The reference profile driven over HTTP only, as a go-oversync client (Go, KMP, the device
 * simulator) would: sign in, connect, push a bundle touching all eight tables (the team <-> member
 * cycle included), pull it from a second device, hydrate a third from a snapshot.
 */
import { randomUUID } from 'node:crypto';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signJwt } from '../../src/jwt.js';
import { referenceProfile } from '../../src/profiles.js';
import { type DemoServer, startDemoServer } from '../../src/server.js';

const SECRET = 'reference-profile-test-secret';
let tdb: TestDatabase;
let server: DemoServer;

beforeAll(async () => {
  tdb = await createTestDatabase({ prefix: 'demo_reference' });
  server = await startDemoServer({
    databaseUrl: tdb.url,
    replicaUrls: tdb.replicaUrls,
    port: 0,
    profile: referenceProfile,
    secret: SECRET,
  });
});
afterAll(async () => {
  await server?.close();
  await tdb?.drop();
});

interface Res<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}
async function http<T = Record<string, unknown>>(
  method: string,
  path: string,
  opts: { token?: string; source?: string; body?: unknown } = {},
): Promise<Res<T>> {
  const headers: Record<string, string> = {};
  if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
  if (opts.source) headers['oversync-source-id'] = opts.source;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`${server.url}${path}`, {
    method,
    headers,
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await r.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: r.status, headers: r.headers, body: body as T, text };
}

async function signIn(user: string, device: string): Promise<string> {
  const r = await http<{ token: string; user: string; device: string; expires_in: number }>(
    'POST',
    '/dummy-signin',
    {
      body: { user, password: 'any', device },
    },
  );
  expect(r.status).toBe(200);
  expect(r.body.user).toBe(user);
  expect(r.body.device).toBe(device);
  expect(r.body.expires_in).toBe(300);
  return r.body.token;
}

const ids = {
  user: randomUUID(),
  post: randomUUID(),
  catRoot: randomUUID(),
  catChild: randomUUID(),
  team: randomUUID(),
  member: randomUUID(),
  file: randomUUID(),
  review: randomUUID(),
  typed: randomUUID(),
};
const S = 'business';
const row = (table: string, id: string, payload: Record<string, unknown>) => ({
  schema: S,
  table,
  key: { id },
  op: 'INSERT',
  base_row_version: 0,
  payload: { id, ...payload },
});
// Children before parents on purpose where FKs are deferred, and the team/member cycle both ways.
const ROWS = [
  row('team_members', ids.member, { name: 'Ann', team_id: ids.team }),
  row('teams', ids.team, { name: 'Blue', captain_member_id: ids.member }),
  row('users', ids.user, { name: 'Ann', email: 'ann@example.com' }),
  row('posts', ids.post, { title: 'Hello', content: 'first post', author_id: ids.user }),
  row('categories', ids.catChild, { name: 'child', parent_id: ids.catRoot }),
  row('categories', ids.catRoot, { name: 'root', parent_id: null }),
  row('files', ids.file, { name: 'a.bin', data: Buffer.from([0, 1, 2, 250, 255]).toString('base64') }),
  row('file_reviews', ids.review, { review: 'looks fine', file_id: ids.file }),
  row('typed_rows', ids.typed, {
    name: 'typed',
    note: null,
    count_value: 42,
    enabled_flag: 1,
    rating: 4.5,
    data: Buffer.from('hi').toString('base64'),
    created_at: '2026-01-02T03:04:05Z',
  }),
];
const TABLES = [
  'users',
  'posts',
  'categories',
  'teams',
  'team_members',
  'files',
  'file_reviews',
  'typed_rows',
];

describe('reference profile over HTTP', () => {
  it('refuses missing, malformed and forged bearer tokens with plain-text 401s', async () => {
    const none = await http('POST', '/sync/connect', {
      source: 'x',
      body: { has_local_pending_rows: false },
    });
    expect(none.status).toBe(401);
    const forged = await signJwt('another-secret', { sub: 'mallory' });
    const bad = await http('POST', '/sync/connect', { token: forged, source: 'x', body: {} });
    expect(bad.status).toBe(401);
    const expired = await signJwt(SECRET, { sub: 'ann', ttlSeconds: -10 });
    expect((await http('GET', '/sync/capabilities', { token: expired, source: 'x' })).status).toBe(401);
    const noSource = await http('POST', '/sync/connect', {
      token: await signJwt(SECRET, { sub: 'ann' }),
      body: {},
    });
    expect(noSource.status).toBe(400);
    expect((noSource.body as { error: string }).error).toBe('invalid_request');
  });

  it('serves health and status without auth, listing exactly the eight business tables', async () => {
    expect((await http('GET', '/syncx/health')).status).toBe(200);
    const st = await http<{ registered_tables: string[]; app_name: string }>('GET', '/syncx/status');
    expect(st.status).toBe(200);
    expect([...st.body.registered_tables].sort()).toEqual(TABLES.map((t) => `${S}.${t}`).sort());
  });

  it('sign in, connect, push all eight tables, pull on a second device, hydrate a third from a snapshot', async () => {
    const user = `ref-${randomUUID().slice(0, 8)}`;
    // Device 1 seeds the scope from local rows.
    const t1 = await signIn(user, 'device-1');
    const src1 = randomUUID();
    const caps = await http<{ features: Record<string, boolean> }>('GET', '/sync/capabilities', {
      token: t1,
      source: src1,
    });
    expect(caps.status).toBe(200);
    expect(caps.body.features['connect_lifecycle']).toBe(true);
    expect(caps.body.features['bundle_change_watch']).toBe(true);
    const c1 = await http<{ resolution: string; initialization_id?: string }>('POST', '/sync/connect', {
      token: t1,
      source: src1,
      body: { has_local_pending_rows: true },
    });
    expect(c1.status).toBe(200);
    expect(c1.body.resolution).toBe('initialize_local');
    const create = await http<{ push_id: string; status: string }>('POST', '/sync/push-sessions', {
      token: t1,
      source: src1,
      body: {
        source_bundle_id: 1,
        planned_row_count: ROWS.length,
        initialization_id: c1.body.initialization_id,
      },
    });
    expect(create.status, create.text).toBe(200);
    expect(create.body.status).toBe('staging');
    const pushId = create.body.push_id;
    const chunk = await http<{ next_expected_row_ordinal: number }>(
      'POST',
      `/sync/push-sessions/${pushId}/chunks`,
      {
        token: t1,
        source: src1,
        body: { start_row_ordinal: 0, rows: ROWS },
      },
    );
    expect(chunk.status, chunk.text).toBe(200);
    expect(chunk.body.next_expected_row_ordinal).toBe(ROWS.length);
    const commit = await http<{
      bundle_seq: number;
      row_count: number;
      bundle_hash: string;
      source_id: string;
    }>('POST', `/sync/push-sessions/${pushId}/commit`, { token: t1, source: src1 });
    expect(commit.status, commit.text).toBe(200);
    expect(commit.body.source_id).toBe(src1);
    expect(commit.body.row_count).toBe(ROWS.length);
    expect(commit.body.bundle_hash).toMatch(/^[0-9a-f]{64}$/);
    // The dbx read-your-writes token of the commit: a read carrying it sees the rows (replica or primary).
    const writeToken = commit.headers.get('x-demo-write-token') ?? '';
    expect(writeToken).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    const mine = await fetch(`${server.url}/demo/rows`, {
      headers: { authorization: `Bearer ${t1}`, 'x-demo-write-token': writeToken },
    }).then((r) => r.json() as Promise<{ tables: Record<string, Array<{ id: string }>>; servedBy: string }>);
    expect(mine.tables['business.teams']?.map((r) => r.id)).toEqual([ids.team]);
    expect(['replica', 'primary']).toContain(mine.servedBy);

    // Device 2 of the same user pulls the bundle.
    const t2 = await signIn(user, 'device-2');
    const src2 = randomUUID();
    const c2 = await http<{ resolution: string }>('POST', '/sync/connect', {
      token: t2,
      source: src2,
      body: { has_local_pending_rows: false },
    });
    expect(c2.body.resolution).toBe('remote_authoritative');
    const pull = await http<{
      stable_bundle_seq: number;
      has_more: boolean;
      bundles: Array<{
        bundle_seq: number;
        bundle_hash: string;
        rows: Array<{ table: string; payload: Record<string, unknown> }>;
      }>;
    }>('GET', '/sync/pull?after_bundle_seq=0&max_bundles=100', { token: t2, source: src2 });
    expect(pull.status, pull.text).toBe(200);
    expect(pull.body.stable_bundle_seq).toBe(commit.body.bundle_seq);
    const bundle = pull.body.bundles.find((b) => b.bundle_seq === commit.body.bundle_seq);
    expect(bundle?.bundle_hash).toBe(commit.body.bundle_hash);
    expect(new Set(bundle?.rows.map((r) => r.table))).toEqual(new Set(TABLES));
    const team = bundle?.rows.find((r) => r.table === 'teams');
    expect(team?.payload['captain_member_id']).toBe(ids.member);
    const file = bundle?.rows.find((r) => r.table === 'files');
    expect(file?.payload['data']).toBe(Buffer.from([0, 1, 2, 250, 255]).toString('base64'));

    // Device 3 hydrates from a snapshot.
    const t3 = await signIn(user, 'device-3');
    const src3 = randomUUID();
    const c3 = await http<{ resolution: string }>('POST', '/sync/connect', {
      token: t3,
      source: src3,
      body: { has_local_pending_rows: false },
    });
    expect(c3.body.resolution).toBe('remote_authoritative');
    const snap = await http<{ snapshot_id: string; snapshot_bundle_seq: number; row_count: number }>(
      'POST',
      '/sync/snapshot-sessions',
      { token: t3, source: src3 },
    );
    expect(snap.status, snap.text).toBe(200);
    expect(snap.body.row_count).toBe(ROWS.length);
    expect(snap.body.snapshot_bundle_seq).toBe(commit.body.bundle_seq);
    const got: Array<{
      table: string;
      key: { id: string };
      row_version: number;
      payload: Record<string, unknown>;
    }> = [];
    let after = 0;
    for (;;) {
      const page = await http<{ rows: typeof got; next_row_ordinal: number; has_more: boolean }>(
        'GET',
        `/sync/snapshot-sessions/${snap.body.snapshot_id}?after_row_ordinal=${after}&max_rows=4`,
        { token: t3, source: src3 },
      );
      expect(page.status, page.text).toBe(200);
      got.push(...page.body.rows);
      expect(page.body.next_row_ordinal).toBe(after + page.body.rows.length);
      after = page.body.next_row_ordinal;
      if (!page.body.has_more) break;
    }
    expect(got.map((r) => r.key.id).sort()).toEqual(ROWS.map((r) => r.key.id).sort());
    expect(got.every((r) => r.row_version === commit.body.bundle_seq)).toBe(true);
    const typed = got.find((r) => r.table === 'typed_rows');
    expect(typed?.payload['count_value']).toBe(42);
    expect(typed?.payload['rating']).toBe(4.5);
    const del = await http('DELETE', `/sync/snapshot-sessions/${snap.body.snapshot_id}`, {
      token: t3,
      source: src3,
    });
    expect(del.status).toBe(204);

    // Another user sees nothing of it.
    const tOther = await signIn(`other-${randomUUID().slice(0, 6)}`, 'device-x');
    const srcX = randomUUID();
    const cx = await http<{ resolution: string }>('POST', '/sync/connect', {
      token: tOther,
      source: srcX,
      body: { has_local_pending_rows: false },
    });
    expect(cx.body.resolution).toBe('initialize_empty');
    const px = await http<{ bundles: unknown[] }>('GET', '/sync/pull?after_bundle_seq=0', {
      token: tOther,
      source: srcX,
    });
    expect(px.status).toBe(200);
    expect(px.body.bundles).toEqual([]);
    const rowsX = await http<{ tables: Record<string, unknown[]> }>('GET', '/demo/rows', { token: tOther });
    expect(Object.values(rowsX.body.tables).flat()).toEqual([]);
  });

  it('serves the reference test routes: retention floor (→ history_pruned) and reset', async () => {
    const user = `floor-${randomUUID().slice(0, 8)}`;
    const t = await signIn(user, 'device-f');
    const src = randomUUID();
    const c = await http<{ resolution: string }>('POST', '/sync/connect', {
      token: t,
      source: src,
      body: { has_local_pending_rows: false },
    });
    expect(c.body.resolution).toBe('initialize_empty');
    const create = await http<{ push_id: string }>('POST', '/sync/push-sessions', {
      token: t,
      source: src,
      body: { source_bundle_id: 1, planned_row_count: 1 },
    });
    const id = randomUUID();
    await http('POST', `/sync/push-sessions/${create.body.push_id}/chunks`, {
      token: t,
      source: src,
      body: { start_row_ordinal: 0, rows: [row('users', id, { name: 'F', email: 'f@example.com' })] },
    });
    expect(
      (await http('POST', `/sync/push-sessions/${create.body.push_id}/commit`, { token: t, source: src }))
        .status,
    ).toBe(200);
    const floor = await http('POST', '/test/retention-floor', {
      body: { user_id: user, retained_bundle_floor: 1 },
    });
    expect(floor.status, floor.text).toBe(200);
    const pruned = await http<{ error: string }>('GET', '/sync/committed-bundles/1/rows', {
      token: t,
      source: src,
    });
    expect(pruned.status).toBe(409);
    expect(pruned.body.error).toBe('history_pruned');
    expect(
      (await http('POST', '/test/retention-floor', { body: { user_id: 'nobody', retained_bundle_floor: 0 } }))
        .status,
    ).toBe(404);

    const reset = await http<{ status: string; schema: string }>('POST', '/test/reset');
    expect(reset.status, reset.text).toBe(200);
    expect(reset.body).toEqual({ status: 'ok', schema: 'business' });
    const again = await http<{ resolution: string }>('POST', '/sync/connect', {
      token: t,
      source: src,
      body: { has_local_pending_rows: false },
    });
    expect(again.body.resolution, again.text).toBe('initialize_empty');
    const st = await http<{ ledger: Array<{ status: string }> }>('GET', '/demo/status');
    expect(st.body.ledger.filter((o) => o.status === 'committed').length).toBeGreaterThanOrEqual(2);
  });
});
