/**
 * The one-request push (`POST /sync/push`, feature `single_request_push`) answers every bundle as
 * the three requests of a push session would: each scenario below runs once through a session
 * (create, chunk, commit) and once as one request, for two users in the same state, and both must
 * answer the same statuses and bodies (ids aside) and store the same rows. The common case commits
 * without staging anything; the rest (an initialization lease, a replay) go through a session.
 */
import { channel } from 'node:diagnostics_channel';
import { computeBundleHash } from '@x/oversync/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  Device,
  deleteRow,
  emptyScopeDevice,
  insertRow,
  randomUUID,
  sharedFixture,
  userRow,
} from '../fixture.js';

const fx = sharedFixture({ service: { limits: { maxRowsPerPushChunk: 50 } } });
beforeAll(fx.start);
afterAll(fx.close);

/** `d` pushes `rows` as its next source bundle (or `sbid`) in one request. */
async function pushOne(d: Device, rows: unknown[], opts: { sbid?: number; initializationId?: string } = {}) {
  const sbid = opts.sbid ?? d.sourceBundleId + 1;
  const r = await d.json('POST', '/sync/push', {
    source_bundle_id: sbid,
    rows,
    ...(opts.initializationId ? { initialization_id: opts.initializationId } : {}),
  });
  if (r.status === 200) d.sourceBundleId = Math.max(d.sourceBundleId, sbid);
  return r;
}

/** A session push's answer in the one-request form: commit bodies gain `status: 'committed'`. */
function asOneRequest(r: { status: number; body: Record<string, unknown> }) {
  if (r.status !== 200 || r.body['status'] === 'already_committed') return r;
  return { status: 200, body: { status: 'committed', ...r.body } };
}

/**
 * An answer with the device's user and source ids and the rows' default timestamps replaced by
 * placeholders, and its bundle_hash (which covers those timestamps) checked against the committed rows.
 */
async function anonymous(d: Device, r: { status: number; body: Record<string, unknown> }) {
  const { bundle_hash: hash, ...body } = r.body;
  if (typeof hash === 'string') {
    const rows = await d.json<{ rows: never[] }>(
      'GET',
      `/sync/committed-bundles/${body['bundle_seq']}/rows?max_rows=1000`,
    );
    expect(computeBundleHash(rows.body.rows).hex).toBe(hash);
  }
  return JSON.parse(
    JSON.stringify({ status: r.status, body })
      .replaceAll(d.userId, '<user>')
      .replaceAll(d.sourceId, '<source>')
      .replace(/"(created_at|updated_at)":"[^"]*"/g, '"$1":"<now>"'),
  );
}

/** What the user's registered tables hold (ids are the scenario's, the same for both users). */
async function stored(d: Device) {
  const r = await fx.cluster.query<{ t: string; row: string }>(
    `SELECT 'users' AS t, (to_jsonb(u) - '_sync_scope_id' - 'created_at' - 'updated_at')::text AS row FROM business.users u WHERE _sync_scope_id = $1
     UNION ALL
     SELECT 'posts', (to_jsonb(p) - '_sync_scope_id' - 'created_at' - 'updated_at')::text FROM business.posts p WHERE _sync_scope_id = $1
     UNION ALL
     SELECT 'typed_rows', (to_jsonb(x) - '_sync_scope_id')::text FROM business.typed_rows x WHERE _sync_scope_id = $1
     ORDER BY 1, 2`,
    [d.userId],
  );
  return r.rows;
}

type Step = (ids: string[]) => { rows: unknown[]; sbid?: (d: Device) => number };
const post = (id: string, author: string) =>
  insertRow('posts', { id, title: 't', content: 'c', author_id: author });
/** Each scenario: bundles pushed one after the other (base versions from the bundle_seq order). */
const SCENARIOS: Record<string, Step[]> = {
  'inserts, an update and a delete with the right bases': [
    (ids) => ({ rows: [userRow(ids[0]!, 'a'), userRow(ids[1]!, 'b'), post(ids[2]!, ids[0]!)] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'a2', 1, 'UPDATE'), deleteRow('posts', ids[2]!, 1)] }),
  ],
  'a stale update and an insert of an existing row conflict': [
    (ids) => ({ rows: [userRow(ids[0]!, 'a')] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'a2', 1, 'UPDATE')] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'a3', 1, 'UPDATE')] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'again')] }),
  ],
  'a foreign key the database refuses names the row': [
    (ids) => ({ rows: [userRow(ids[0]!, 'a'), post(ids[1]!, ids[2]!)] }),
  ],
  'one row twice in a bundle': [(ids) => ({ rows: [userRow(ids[0]!, 'a'), userRow(ids[0]!, 'b')] })],
  'a value its column refuses': [
    (ids) => ({
      rows: [userRow(ids[0]!, 'a'), insertRow('typed_rows', { id: ids[1]!, name: 'n', enabled_flag: 'yes' })],
    }),
  ],
  'an unknown table and a gap in the source sequence': [
    (ids) => ({ rows: [{ ...userRow(ids[0]!, 'a'), table: 'nope' }] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'a')], sbid: (d) => d.sourceBundleId + 2 }),
  ],
  'a replay of the committed bundle': [
    (ids) => ({ rows: [userRow(ids[0]!, 'a')] }),
    (ids) => ({ rows: [userRow(ids[0]!, 'a')], sbid: (d) => d.sourceBundleId }),
  ],
};

describe('the same answers and rows as a push session', () => {
  for (const [name, steps] of Object.entries(SCENARIOS)) {
    test(name, async () => {
      const ids = Array.from({ length: 4 }, () => randomUUID());
      const viaSession = await emptyScopeDevice(fx.app);
      const viaOne = await emptyScopeDevice(fx.app);
      for (const step of steps) {
        const s = step(ids);
        const sbidS = s.sbid?.(viaSession);
        const session = asOneRequest(
          sbidS === undefined
            ? await viaSession.push(s.rows)
            : await (async () => {
                const saved = viaSession.sourceBundleId;
                viaSession.sourceBundleId = sbidS - 1;
                const r = await viaSession.push(s.rows);
                viaSession.sourceBundleId = Math.max(saved, viaSession.sourceBundleId);
                return r;
              })(),
        );
        const one = await pushOne(viaOne, s.rows, s.sbid ? { sbid: s.sbid(viaOne) } : {});
        expect(await anonymous(viaOne, one)).toEqual(await anonymous(viaSession, session));
      }
      expect(await stored(viaOne)).toEqual(await stored(viaSession));
    });
  }
});

describe('paths', () => {
  /** The statements a request sends (the `x:dbx:query` channel), while `fn` runs. */
  async function statementsOf(fn: () => Promise<unknown>): Promise<string[]> {
    const sqls: string[] = [];
    const listener = (m: unknown) => sqls.push((m as { sql: string }).sql);
    channel('x:dbx:query').subscribe(listener);
    try {
      await fn();
    } finally {
      channel('x:dbx:query').unsubscribe(listener);
    }
    return sqls;
  }
  const staging = (sqls: string[]) => sqls.filter((s) => s.includes('INSERT INTO sync.push_session')).length;

  test('the common case stages nothing and commits in one transaction', async () => {
    const d = await emptyScopeDevice(fx.app);
    const sqls = await statementsOf(() => pushOne(d, [userRow(randomUUID(), 'a')]));
    expect(staging(sqls)).toBe(0);
    expect(sqls.filter((s) => /^begin/i.test(s)).length).toBe(1);
    expect(d.sourceBundleId).toBe(1);
    // Fresh INSERTs: the start statement also began the direct commit (bundle_seq, log row,
    // context), and BEGIN travels with it (@x/dbx), so the transaction is four round trips:
    // begin + start, INSERT, tail, commit (the first push of a server also read its
    // direct-insert plan, once).
    const next = await statementsOf(() =>
      pushOne(d, [userRow(randomUUID(), 'b'), userRow(randomUUID(), 'c')]),
    );
    expect(next[0]).toMatch(/^begin[^;]*;[\s\S]*push_bundle_start/);
    expect(next.some((s) => s.includes('direct_bundle_begin'))).toBe(false);
    expect(next).toHaveLength(4);
    expect(d.sourceBundleId).toBe(2);
    expect((await stored(d)).length).toBe(3);
  });

  test('while the scope initializes, the push goes through a session under the lease', async () => {
    const d = new Device(fx.app, `init-${randomUUID()}`);
    const lease = await d.connect(true);
    expect(lease.body['resolution']).toBe('initialize_local');
    const initializationId = lease.body['initialization_id'] as string;
    let r: Awaited<ReturnType<typeof pushOne>> | undefined;
    const sqls = await statementsOf(async () => {
      r = await pushOne(d, [userRow(randomUUID(), 'a')], { initializationId });
    });
    expect(r).toMatchObject({ status: 200, body: { status: 'committed', source_bundle_id: 1 } });
    expect(staging(sqls)).toBeGreaterThan(0);
    // and the scope is initialized: the next push is the common case
    const after = await statementsOf(() => pushOne(d, [userRow(randomUUID(), 'b')]));
    expect(staging(after)).toBe(0);
    expect(d.sourceBundleId).toBe(2);
  });

  test('more rows than one chunk holds is 400 push_chunk_invalid; nothing stored', async () => {
    const d = await emptyScopeDevice(fx.app);
    const rows = Array.from({ length: 51 }, (_, i) => userRow(randomUUID(), `u${i}`));
    expect(await pushOne(d, rows)).toMatchObject({ status: 400, body: { error: 'push_chunk_invalid' } });
    expect(await stored(d)).toEqual([]);
  });

  test('the same bundle sent 8 times at once under an initialization lease (through sessions): committed once, every answer 200', async () => {
    const d = new Device(fx.app, `init-${randomUUID()}`);
    const lease = await d.connect(true);
    const initializationId = lease.body['initialization_id'] as string;
    const rows = [userRow(randomUUID(), 'a'), userRow(randomUUID(), 'b')];
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => pushOne(d, rows, { sbid: 1, initializationId })),
    );
    expect(
      answers.map((a) => a.status),
      JSON.stringify(answers.map((a) => a.body)),
    ).toEqual(answers.map(() => 200));
    expect(new Set(answers.map((a) => a.body['bundle_seq'])).size).toBe(1);
    expect(answers.filter((a) => a.body['status'] === 'committed').length).toBe(1);
    expect((await stored(d)).length).toBe(2);
  });

  test('one device sending the same bundle 8 times at once: committed exactly once', async () => {
    const d = await emptyScopeDevice(fx.app);
    const rows = [userRow(randomUUID(), 'a'), userRow(randomUUID(), 'b')];
    const answers = await Promise.all(Array.from({ length: 8 }, () => pushOne(d, rows, { sbid: 1 })));
    for (const a of answers) expect(a.status).toBe(200);
    const seqs = new Set(answers.map((a) => a.body['bundle_seq']));
    const hashes = new Set(answers.map((a) => a.body['bundle_hash']));
    expect([seqs.size, hashes.size]).toEqual([1, 1]);
    expect(answers.filter((a) => a.body['status'] === 'committed').length).toBe(1);
    expect((await stored(d)).length).toBe(2);
  });
});
