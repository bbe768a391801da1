// The transport validates big answers' row arrays in slices (issue #21): the same data and the
// same failures as one schema parse, and a pre-serialised body is sent as is.
import type { Logger } from '@x/core';
import { describe, expect, it } from 'vitest';
import { isClientError } from '../../../src/client/index.js';
import { Remote } from '../../../src/client/internal/remote.js';
import { Transport } from '../../../src/client/internal/transport.js';

const silent = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;
const noRetry = { enabled: false, maxAttempts: 1, initialBackoffMs: 1, maxBackoffMs: 1, jitter: 0 };

function remoteAnswering(answer: unknown, sent: { body?: unknown } = {}): Remote {
  const fetch = (async (_url: string, init?: RequestInit) => {
    sent.body = init?.body;
    return new Response(JSON.stringify(answer), { status: 200 });
  }) as unknown as typeof globalThis.fetch;
  return new Remote(
    new Transport({ baseUrl: 'http://x', fetch, token: 't', retry: noRetry, logger: silent }),
  );
}

const snapRow = (i: number) => ({
  schema: 'business',
  table: 'users',
  key: { id: `k${i}` },
  row_version: i + 1,
  payload: { id: `k${i}`, name: `n${i}` },
  extra: 'stripped',
});
const bundleRow = (i: number) => ({
  schema: 'business',
  table: 'users',
  key: { id: `k${i}` },
  op: 'INSERT',
  row_version: i + 1,
  payload: { id: `k${i}` },
});

describe('transport: row arrays validated in slices', () => {
  it('returns the snapshot chunk as one parse would (unknown fields stripped, all rows)', async () => {
    const rows = Array.from({ length: 5000 }, (_, i) => snapRow(i));
    const chunk = { snapshot_id: 's', snapshot_bundle_seq: 3, rows, next_row_ordinal: 5000, has_more: false };
    const got = await remoteAnswering(chunk).snapshotChunk('s', { afterRowOrdinal: 0, maxRows: 5000 });
    expect(got.rows).toHaveLength(5000);
    expect(got.rows?.[4999]).toEqual({
      schema: 'business',
      table: 'users',
      key: { id: 'k4999' },
      row_version: 5000,
      payload: { id: 'k4999', name: 'n4999' },
    });
    expect(got.next_row_ordinal).toBe(5000);
    const empty = await remoteAnswering({ ...chunk, rows: null }).snapshotChunk('s', {
      afterRowOrdinal: 0,
      maxRows: 5000,
    });
    expect(empty.rows).toBeNull();
  });

  it('a malformed row, or a malformed envelope, fails as a protocol error naming the path', async () => {
    const rows = Array.from({ length: 3000 }, (_, i) => snapRow(i));
    (rows[2500] as { row_version: unknown }).row_version = 'x';
    const bad = { snapshot_id: 's', snapshot_bundle_seq: 3, rows, next_row_ordinal: 3000, has_more: false };
    const e1 = await remoteAnswering(bad)
      .snapshotChunk('s', { afterRowOrdinal: 0, maxRows: 5000 })
      .catch((e: unknown) => e);
    expect(isClientError(e1) && e1.code).toBe('OVERSYNC_CLIENT_PROTOCOL');
    const issues = (e1 as { details: { issues: Array<{ path: unknown[] }> } }).details.issues;
    expect(issues[0]?.path).toEqual(['rows', 2500, 'row_version']);
    const e2 = await remoteAnswering({ ...bad, rows: [snapRow(0)], has_more: 'no' })
      .snapshotChunk('s', { afterRowOrdinal: 0, maxRows: 5000 })
      .catch((e: unknown) => e);
    expect(isClientError(e2) && e2.code).toBe('OVERSYNC_CLIENT_PROTOCOL');
  });

  it('validates each bundle of a pull answer, and committed-bundle pages', async () => {
    const bundles = [1, 2, 3].map((seq) => ({
      bundle_seq: seq,
      source_id: 'src',
      source_bundle_id: seq,
      rows: seq === 2 ? null : Array.from({ length: 2000 }, (_, i) => bundleRow(i)),
    }));
    const pull = await remoteAnswering({ stable_bundle_seq: 3, bundles, has_more: false }).pull({
      afterBundleSeq: 0,
      maxBundles: 10,
    });
    expect(pull.bundles?.map((b) => b.rows?.length ?? null)).toEqual([2000, null, 2000]);
    expect(pull.bundles?.[2]?.rows?.[1999]).toEqual(bundleRow(1999));
    (bundles[2]?.rows?.[7] as { op: string }).op = 'MERGE';
    const e = await remoteAnswering({ stable_bundle_seq: 3, bundles, has_more: false })
      .pull({ afterBundleSeq: 0, maxBundles: 10 })
      .catch((x: unknown) => x);
    const path = (e as { details: { issues: Array<{ path: unknown[] }> } }).details.issues[0]?.path;
    expect(path).toEqual(['bundles', 2, 'rows', 7, 'op']);
    const page = await remoteAnswering({
      bundle_seq: 9,
      source_id: 'src',
      source_bundle_id: 1,
      row_count: 2,
      bundle_hash: 'h',
      rows: [bundleRow(0), bundleRow(1)],
      next_row_ordinal: 1,
      has_more: false,
    }).committedBundleRows(9, { maxRows: 10 });
    expect(page.rows).toEqual([bundleRow(0), bundleRow(1)]);
  });

  it('sends a pre-serialised push chunk as is', async () => {
    const sent: { body?: unknown } = {};
    const json = '{"start_row_ordinal":0,"rows":[]}';
    await remoteAnswering({ push_id: 'p', next_expected_row_ordinal: 0 }, sent).pushChunk('p', json);
    expect(sent.body).toBe(json);
  });
});
