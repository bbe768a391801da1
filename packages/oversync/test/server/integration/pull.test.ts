import type { StageTiming } from '@x/oversync/server';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createFixture, Device, deleteRow, type Fixture, randomUUID, userRow } from '../fixture.js';

let fx: Fixture;
const timings: StageTiming[] = [];
beforeAll(async () => {
  fx = await createFixture({
    service: {
      limits: { retainedBundlesPerUser: 3, retentionPruneBatchSize: 1 },
      stageMetrics: (t) => timings.push(t),
    },
  });
});
afterAll(async () => {
  await fx?.close();
});

async function device() {
  const d = new Device(fx.app, `p-${randomUUID()}`);
  await d.connect(false);
  return d;
}
type PullBody = {
  stable_bundle_seq: number;
  has_more: boolean;
  bundles: Array<{ bundle_seq: number; rows: unknown[] }>;
};

describe('pull', () => {
  test('paging with max_bundles, has_more and a frozen target_bundle_seq', async () => {
    const d = await device();
    for (let i = 0; i < 3; i++) expect((await d.push([userRow(randomUUID(), `n${i}`)])).status).toBe(200);
    const first = await d.json<PullBody>('GET', '/sync/pull?after_bundle_seq=0&max_bundles=2');
    expect(first.status).toBe(200);
    expect(first.body.stable_bundle_seq).toBe(3);
    expect(first.body.has_more).toBe(true);
    expect(first.body.bundles.map((b) => b.bundle_seq)).toEqual([1, 2]);
    // A write lands between pages; the frozen target keeps the walk stable.
    await d.push([userRow(randomUUID(), 'late')]);
    const second = await d.json<PullBody>(
      'GET',
      '/sync/pull?after_bundle_seq=2&max_bundles=2&target_bundle_seq=3',
    );
    expect(second.body).toMatchObject({ stable_bundle_seq: 3, has_more: false });
    expect(second.body.bundles.map((b) => b.bundle_seq)).toEqual([3]);
    const upToDate = await d.json<PullBody>('GET', '/sync/pull?after_bundle_seq=4');
    expect(upToDate.body).toEqual({ stable_bundle_seq: 4, bundles: [], has_more: false });
    expect(timings.map((t) => t.stage)).toEqual(
      expect.arrayContaining([
        'total',
        'transaction',
        'retained_floor_check',
        'resolve_stable_bundle_seq',
        'list_bundle_seqs',
        'load_bundles',
      ]),
    );
    expect(timings.every((t) => t.operation === 'pull')).toBe(true);
  });

  test('query validation is 400 invalid_request', async () => {
    const d = await device();
    for (const q of [
      'after_bundle_seq=x',
      'after_bundle_seq=-1',
      'after_bundle_seq=%201',
      'max_bundles=0',
      'max_bundles=5001',
      'max_bundles=1.5',
      'target_bundle_seq=-2',
      'target_bundle_seq=99999999999999999999',
    ]) {
      const r = await d.json('GET', `/sync/pull?${q}`);
      expect(r, q).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    }
  });

  test('scope gates: uninitialized 409, initializing 409 scope_initializing', async () => {
    const fresh = new Device(fx.app, `fresh-${randomUUID()}`);
    expect((await fresh.pull(0)).body['error']).toBe('scope_uninitialized');
    expect((await fresh.connect(true)).body['resolution']).toBe('initialize_local');
    expect((await fresh.pull(0)).body['error']).toBe('scope_initializing');
  });
});

describe('committed bundle rows', () => {
  test('0-based paging: next_row_ordinal is the last returned ordinal', async () => {
    const d = await device();
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const c = await d.push(ids.map((id, i) => userRow(id, `r${i}`)));
    const seq = c.body['bundle_seq'] as number;
    const url = `/sync/committed-bundles/${seq}/rows`;
    type Page = {
      rows: Array<{ key: { id: string } }>;
      next_row_ordinal: number;
      has_more: boolean;
      bundle_hash: string;
    };
    const p1 = await d.json<Page>('GET', `${url}?max_rows=1`);
    expect(p1.body).toMatchObject({
      bundle_seq: seq,
      source_id: d.sourceId,
      source_bundle_id: 1,
      row_count: 3,
      next_row_ordinal: 0,
      has_more: true,
    });
    expect(p1.body.bundle_hash).toBe(c.body['bundle_hash']);
    expect(p1.body.rows.map((r) => r.key.id)).toEqual([ids[0]]);
    const p2 = await d.json<Page>('GET', `${url}?after_row_ordinal=0&max_rows=1`);
    expect(p2.body).toMatchObject({ next_row_ordinal: 1, has_more: true });
    const p3 = await d.json<Page>('GET', `${url}?after_row_ordinal=1&max_rows=2`);
    expect(p3.body).toMatchObject({ next_row_ordinal: 2, has_more: false });
    expect(p3.body.rows.map((r) => r.key.id)).toEqual([ids[2]]);
    const empty = await d.json<Page>('GET', `${url}?after_row_ordinal=2`);
    expect(empty.body).toMatchObject({ rows: [], next_row_ordinal: 2, has_more: false });
    const all = await d.json<Page>('GET', `${url}?max_rows=999999`);
    expect(all.body.rows).toHaveLength(3);
  });

  test('errors: invalid seq / after / max_rows are 400, unknown bundle 404, other user 404', async () => {
    const d = await device();
    const c = await d.push([userRow(randomUUID(), 'x')]);
    const seq = c.body['bundle_seq'] as number;
    for (const url of [
      '/sync/committed-bundles/abc/rows',
      '/sync/committed-bundles/0/rows',
      `/sync/committed-bundles/${seq}/rows?after_row_ordinal=-1`,
      `/sync/committed-bundles/${seq}/rows?after_row_ordinal=%207`,
      `/sync/committed-bundles/${seq}/rows?max_rows=0`,
    ]) {
      expect(await d.json('GET', url), url).toMatchObject({
        status: 400,
        body: { error: 'committed_bundle_chunk_invalid' },
      });
    }
    expect(await d.json('GET', '/sync/committed-bundles/99/rows')).toMatchObject({
      status: 404,
      body: { error: 'committed_bundle_not_found' },
    });
    const other = await device();
    expect((await other.json('GET', `/sync/committed-bundles/${seq}/rows`)).status).toBe(404);
    const nobody = new Device(fx.app, `nobody-${randomUUID()}`);
    expect((await nobody.json('GET', `/sync/committed-bundles/${seq}/rows`)).status).toBe(404);
  });
});

describe('retention and history_pruned', () => {
  test('the floor moves one batch per bundle; pulls, row fetches and replays behind it are history_pruned', async () => {
    const d = await device();
    const id = randomUUID();
    let version = 0;
    for (let i = 0; i < 6; i++) {
      const r = await d.push([userRow(id, `v${i}`, version, i === 0 ? 'INSERT' : 'UPDATE')]);
      expect(r.status).toBe(200);
      version = r.body['bundle_seq'] as number;
    }
    // 6 bundles, window 3, batch 1: the floor advanced by one per commit once past the window.
    const state = await fx.cluster.query<{ floor: string }>(
      'SELECT retained_bundle_floor::text AS floor FROM sync.user_state WHERE user_id = $1',
      [d.userId],
    );
    expect(Number(state.rows[0]!.floor)).toBe(3);
    const before = (await fx.service.status()).history_pruned_error_count;
    const behind = await d.pull(2);
    expect(behind).toMatchObject({
      status: 409,
      body: {
        error: 'history_pruned',
        message: `requested checkpoint 2 is older than retained history floor 3 for user ${d.userId}`,
      },
    });
    // Fix of the reference: a pull from 0 once the floor moved is history_pruned, never a silent skip.
    expect((await d.pull(0)).body['error']).toBe('history_pruned');
    expect((await d.json('GET', '/sync/pull?after_bundle_seq=4&target_bundle_seq=3')).body['error']).toBe(
      'history_pruned',
    );
    expect((await d.json('GET', '/sync/committed-bundles/3/rows')).body['error']).toBe('history_pruned');
    // As in the reference, a checkpoint equal to the floor is behind it too.
    expect((await d.pull(3)).body['error']).toBe('history_pruned');
    const ok = await d.json<PullBody>('GET', '/sync/pull?after_bundle_seq=4');
    expect(ok.body.bundles.map((b) => b.bundle_seq)).toEqual([5, 6]);
    // A pruned source tuple is never re-accepted nor replayed.
    const replay = await d.json('POST', '/sync/push-sessions', { source_bundle_id: 2, planned_row_count: 1 });
    expect(replay).toMatchObject({ status: 409, body: { error: 'history_pruned' } });
    const status = await fx.service.status();
    expect(status.history_pruned_error_count).toBe(before + 5);
    expect(status.retained_bundle_floor_max).toBeGreaterThanOrEqual(3);
    expect(status.user_state_retention_floor_ahead_count).toBe(0);
    // row_state and tombstones are never pruned: a delete still needs the current version.
    expect((await d.push([deleteRow('users', id, 1)])).body['error']).toBe('push_conflict');
    expect((await d.push([deleteRow('users', id, version)])).status).toBe(200);
  });
});
