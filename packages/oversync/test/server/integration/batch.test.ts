// Statements sent together (src/server/internal/batch.ts, issue #19 point 3): parameters written
// as literals must reach PostgreSQL exactly as the same values sent as parameters, and the push
// requests that use it (create, chunk) must work for user and source ids of any text.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { inlineParams, runStatements, StatementBatch } from '../../../src/server/internal/batch.js';
import { emptyScopeDevice, randomUUID, sharedFixture, userRow } from '../fixture.js';

const fx = sharedFixture();
beforeAll(fx.start);
afterAll(fx.close);

const AWKWARD = [
  "o'brien",
  'back\\slash \\x41 \\\\',
  "E'\\'; DROP TABLE sync.user_state; --",
  '$1 $2 $$ $tag$',
  'line\nbreak\ttab',
  'ünïcödé 😀 \u2028',
  '',
];

describe('statements together', () => {
  test('inlined parameters arrive as the same values as bound ones', async () => {
    const params = [
      ...AWKWARD,
      null,
      42,
      -1.5,
      true,
      Buffer.from([0, 1, 0xfe, 0x27, 0x5c]),
      ['a', "b'c", 'd"e', 'f\\g', null, ''],
      [1, 2, 3],
    ];
    const sql = `SELECT ${params.map((_, i) => `$${i + 1}${i >= AWKWARD.length + 5 ? (i === AWKWARD.length + 5 ? '::text[]' : '::int4[]') : i === AWKWARD.length + 4 ? '::bytea' : '::text'} AS c${i}`).join(', ')}`;
    const bound = await fx.cluster.query(sql, params);
    const inlined = await runStatements(fx.cluster, [
      { sql: 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED' },
      { sql, params },
    ]);
    expect(inlined.rows).toEqual(bound.rows);
    expect(inlineParams('SELECT $1', [{}])).toBeUndefined();
  });

  test('a batch runs queued statements in order, each seeing the previous, in its transaction', async () => {
    const got = await fx.cluster.runTx(async (tx) => {
      const b = new StatementBatch(tx);
      b.later('CREATE TEMP TABLE batch_t (v text) ON COMMIT DROP');
      b.later('INSERT INTO batch_t VALUES ($1), ($2)', AWKWARD.slice(0, 2));
      b.later('SET LOCAL statement_timeout = 5000');
      const r = await b.query<{ v: string; t: string }>(
        "SELECT v, current_setting('statement_timeout') AS t FROM batch_t ORDER BY v",
      );
      return r.rows;
    });
    expect(got).toEqual([...AWKWARD.slice(0, 2)].sort().map((v) => ({ v, t: '5s' })));
  });

  test('a push of a user and source with awkward ids commits and pulls back', async () => {
    for (const userId of AWKWARD.filter((u) => u !== '' && !u.includes('\n') && !u.includes('\t'))) {
      const d = await emptyScopeDevice(fx.app, `${userId}-${randomUUID().slice(0, 4)}`);
      const res = await d.push([userRow(randomUUID(), AWKWARD[1]!), userRow(randomUUID(), AWKWARD[2]!)]);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body['row_count']).toBe(2);
      const pulled = await d.pull();
      expect(pulled.status).toBe(200);
      expect(JSON.stringify(pulled.body)).toContain(JSON.stringify(AWKWARD[2]).slice(1, -1));
    }
  });

  test('a chunk staged before its meta carried key hex still has its conflicts found at commit', async () => {
    const d = await emptyScopeDevice(fx.app);
    const id = randomUUID();
    expect((await d.push([userRow(id, 'first')])).status).toBe(200);
    for (const strip of [false, true]) {
      const created = await d.json('POST', '/sync/push-sessions', {
        source_bundle_id: d.sourceBundleId + 1,
        planned_row_count: 2,
      });
      const pushId = created.body['push_id'] as string;
      const chunk = await d.json('POST', `/sync/push-sessions/${pushId}/chunks`, {
        start_row_ordinal: 0,
        rows: [userRow(randomUUID(), 'new'), userRow(id, 'again')],
      });
      expect(chunk.status).toBe(200);
      if (strip)
        await fx.cluster.query(
          "UPDATE sync.push_session_chunks SET meta = (meta::jsonb - 'h')::text WHERE push_id = $1",
          [pushId],
        );
      const commit = await d.json('POST', `/sync/push-sessions/${pushId}/commit`);
      expect(commit.status, JSON.stringify(commit.body)).toBe(409);
      expect(commit.body['error']).toBe('push_conflict');
      await d.json('DELETE', `/sync/push-sessions/${pushId}`);
    }
  });
});
