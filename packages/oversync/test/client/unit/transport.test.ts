// The transport validates big answers' row arrays in slices (issue #21): the same data and the
// same failures as one schema parse, and a pre-serialised body is sent as is.
import type { Logger } from '@x/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isClientError } from '../../../src/client/index.js';
import { Remote } from '../../../src/client/internal/remote.js';
import { Transport } from '../../../src/client/internal/transport.js';
import { isPlainBundleRow, isPlainSnapshotRow } from '../../../src/shared/plain-rows.js';
import { bundleRowSchema, snapshotRowSchema } from '../../../src/shared/wire.js';

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

describe("transport: rows already in their schema's form skip the schema", () => {
  // A row-shaped JSON value: mostly each field present and of its type, sometimes absent, of
  // another type or an unsafe integer, sometimes with a field the schema does not know.
  const anyJson = fc.jsonValue({ maxDepth: 2 });
  const good = {
    schema: fc.string(),
    table: fc.string(),
    key: fc.dictionary(fc.string(), anyJson, { maxKeys: 3 }),
    op: fc.constantFrom('INSERT', 'UPDATE', 'DELETE', 'insert', 'UPSERT'),
    row_version: fc.oneof(
      { weight: 8, arbitrary: fc.integer() },
      { weight: 2, arbitrary: fc.constantFrom(2 ** 53, -(2 ** 53), 1.5, -0, Number.MAX_SAFE_INTEGER) },
    ),
    payload: anyJson,
  };
  const rowLike = (fields: ReadonlyArray<keyof typeof good>) =>
    fc
      .record({
        ...Object.fromEntries(
          fields.map((f) => [
            f,
            fc.oneof(
              { weight: 12, arbitrary: good[f] as fc.Arbitrary<unknown> },
              { weight: 1, arbitrary: anyJson },
              { weight: 1, arbitrary: fc.constant(undefined) },
            ),
          ]),
        ),
        extra: fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: anyJson }),
      })
      // as JSON.parse gives it: absent fields absent, not undefined
      .map((r) => JSON.parse(JSON.stringify(r)) as unknown);
  const cases = [
    [
      'bundle rows',
      isPlainBundleRow,
      bundleRowSchema,
      rowLike(['schema', 'table', 'key', 'op', 'row_version', 'payload']),
    ],
    [
      'snapshot rows',
      isPlainSnapshotRow,
      snapshotRowSchema,
      rowLike(['schema', 'table', 'key', 'row_version', 'payload']),
    ],
  ] as const;

  for (const [what, plain, schema, rows] of cases) {
    it(`${what}: accepted only where the schema accepts, with the very value the schema answers`, () => {
      let taken = 0;
      fc.assert(
        fc.property(fc.oneof({ weight: 9, arbitrary: rows }, { weight: 1, arbitrary: anyJson }), (v) => {
          if (!plain(v)) return;
          taken++;
          const r = schema.safeParse(v);
          expect(r.success).toBe(true);
          expect(v).toStrictEqual(r.data);
        }),
        { numRuns: 2_000 },
      );
      // the property held on rows the fast path took, not only on ones it turned away
      expect(taken).toBeGreaterThan(100);
    });
  }

  it('a well-formed row is taken as it is; one the schema must strip or refuse is not', () => {
    expect(isPlainSnapshotRow(snapRow(1))).toBe(false); // its `extra` field: the schema strips it
    const { extra: _, ...row } = snapRow(1);
    expect(isPlainSnapshotRow(row)).toBe(true);
    expect(isPlainBundleRow(bundleRow(1))).toBe(true);
    const { payload: __, ...del } = { ...bundleRow(1), op: 'DELETE' };
    expect(isPlainBundleRow(del)).toBe(true);
    expect(isPlainSnapshotRow({ ...row, row_version: 2 ** 53 })).toBe(false);
    expect(isPlainBundleRow({ ...bundleRow(1), op: 'MERGE' })).toBe(false);
    expect(isPlainSnapshotRow({ ...row, key: [1] })).toBe(false);
  });
});
