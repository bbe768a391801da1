// Large pushes (issue #19 point 2): a bundle of STREAM_COMMIT_MIN_ROWS rows or more is committed in
// pages over its staged chunks. The committed bundle must be exactly what the whole-bundle path
// writes (rows in staged order, hash the client recomputes from the committed rows), and every
// bundle it does not stream (updates, re-inserts, duplicates, conflicts) must answer as before.
import { randomUUID } from 'node:crypto';
import { computeBundleHash } from '@x/oversync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STREAM_COMMIT_MIN_ROWS } from '../../../src/server/internal/push-commit-stream.js';
import { createFixture, type Device, emptyScopeDevice, type Fixture, userRow } from '../fixture.js';

let f: Fixture;
beforeAll(async () => {
  f = await createFixture({ service: { limits: { retainedBundlesPerUser: 1000 } } });
}, 60_000);
afterAll(async () => {
  await f?.close();
});

const N = STREAM_COMMIT_MIN_ROWS + 1234;

async function readBack(d: Device, seq: number) {
  const rows: Array<Record<string, unknown>> = [];
  let meta: Record<string, unknown> = {};
  for (let after: number | undefined; ; ) {
    const page = await d.json(
      'GET',
      `/sync/committed-bundles/${seq}/rows?max_rows=5000${after === undefined ? '' : `&after_row_ordinal=${after}`}`,
    );
    expect(page.status).toBe(200);
    meta = page.body;
    rows.push(...(page.body['rows'] as Array<Record<string, unknown>>));
    after = page.body['next_row_ordinal'] as number;
    if (!page.body['has_more']) break;
  }
  return { rows, meta };
}

function postRow(id: string, i: number) {
  return {
    schema: 'business',
    table: 'posts',
    key: { id },
    op: 'INSERT',
    base_row_version: 0,
    payload: { id, title: `p${i} <&>`, content: 'c\u2028', author_id: null },
  };
}

describe('large push commit', () => {
  it('streams a bundle of fresh inserts: rows in staged order, hash verifiable', async () => {
    const d = await emptyScopeDevice(f.app);
    const ids = Array.from({ length: N }, () => randomUUID());
    const rows = ids.map((id, i) => userRow(id, `u${i}`));
    const commit = await d.push(rows, { chunkSize: 997 });
    expect(commit.status).toBe(200);
    expect(commit.body['row_count']).toBe(N);
    const { rows: got, meta } = await readBack(d, commit.body['bundle_seq'] as number);
    expect(got.map((r) => (r['key'] as { id: string }).id)).toEqual(ids);
    expect(got[5]!['payload']).toMatchObject({ id: ids[5], name: 'u5', email: 'u5@example.com' });
    expect(computeBundleHash(got as never).hex).toBe(commit.body['bundle_hash']);
    expect(meta['bundle_hash']).toBe(commit.body['bundle_hash']);
    const count = await f.cluster.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM business.users WHERE _sync_scope_id = $1',
      [d.userId],
    );
    expect(count.rows[0]!.n).toBe(String(N));
    const state = await f.cluster.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM sync.row_state s JOIN sync.user_state u USING (user_pk)
        WHERE u.user_id = $1 AND s.bundle_seq = $2`,
      [d.userId, commit.body['bundle_seq']],
    );
    expect(state.rows[0]!.n).toBe(String(N));
  }, 120_000);

  const mixed = (switchEvery: number) => {
    const rows: unknown[] = [];
    for (let i = 0; i < N; i++) {
      const id = randomUUID();
      if (i >= 2000 && i < 2600) rows.push(postRow(id, i));
      else if (Math.floor(i / switchEvery) % 2 === 0) rows.push(userRow(id, `u${i} <b>`));
      else {
        rows.push({
          ...userRow(id, `u${i}`),
          payload: { id, name: `u${i}`, email: `u${i}@example.com`, created_at: '2020-01-01T00:00:00Z' },
        });
      }
    }
    return rows;
  };

  for (const [what, switchEvery] of [
    ['in long runs (streamed)', 1500],
    ['every row (whole-bundle path)', 1],
  ] as const) {
    it(`mixes tables and column sets ${what}`, async () => {
      const d = await emptyScopeDevice(f.app);
      const rows = mixed(switchEvery);
      const commit = await d.push(rows);
      expect(commit.status).toBe(200);
      const { rows: got } = await readBack(d, commit.body['bundle_seq'] as number);
      expect(got.map((r) => (r['key'] as { id: string }).id)).toEqual(
        rows.map((r) => (r as { key: { id: string } }).key.id),
      );
      expect(got[2100]!['table']).toBe('posts');
      expect(computeBundleHash(got as never).hex).toBe(commit.body['bundle_hash']);
    }, 120_000);
  }

  it('answers a duplicate key of a large bundle as before (whole-bundle path)', async () => {
    const d = await emptyScopeDevice(f.app);
    const rows = Array.from({ length: N }, (_, i) => userRow(randomUUID(), `u${i}`));
    rows[N - 1] = userRow((rows[3]!.key as { id: string }).id, 'again');
    const commit = await d.push(rows);
    expect(commit.status).toBe(400);
    expect(commit.body['error']).toBe('push_commit_invalid');
    expect(commit.body['message']).toContain('duplicate target row in staged push session');
  }, 120_000);

  it('answers a row_version conflict of a large bundle as before, and commits updates', async () => {
    const d = await emptyScopeDevice(f.app);
    const id = randomUUID();
    const first = await d.push([userRow(id, 'one')]);
    expect(first.status).toBe(200);
    const rows = Array.from({ length: N }, (_, i) => userRow(randomUUID(), `u${i}`));
    rows[4000] = userRow(id, 'dup insert');
    const conflict = await d.push(rows);
    expect(conflict.status).toBe(409);
    expect(conflict.body['error']).toBe('push_conflict');
    rows[4000] = userRow(id, 'updated', first.body['bundle_seq'] as number, 'UPDATE');
    const commit = await d.push(rows);
    expect(commit.status).toBe(200);
    const { rows: got } = await readBack(d, commit.body['bundle_seq'] as number);
    expect(got[4000]!['op']).toBe('UPDATE');
    expect(computeBundleHash(got as never).hex).toBe(commit.body['bundle_hash']);
  }, 120_000);

  it('answers a missing foreign-key parent in a large bundle as a conflict', async () => {
    const d = await emptyScopeDevice(f.app);
    const rows: unknown[] = Array.from({ length: N }, (_, i) => userRow(randomUUID(), `u${i}`));
    const postId = randomUUID();
    rows.push({
      schema: 'business',
      table: 'posts',
      key: { id: postId },
      op: 'INSERT',
      base_row_version: 0,
      payload: { id: postId, title: 't', content: 'c', author_id: randomUUID() },
    });
    const commit = await d.push(rows);
    expect(commit.status).toBe(409);
    expect(commit.body['error']).toBe('push_conflict');
    expect((commit.body['conflict'] as Record<string, unknown>)['reason']).toBe('foreign_key');
  }, 120_000);
});
