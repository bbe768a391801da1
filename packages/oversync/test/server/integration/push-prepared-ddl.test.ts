/**
 * A push's business INSERT runs as a named prepared statement (db.ts#prepared), planned once per
 * connection. A migration of the business table while the server runs (a column added, as
 * schemaops does; an index) must not break the pushes of the connections that prepared it.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { emptyScopeDevice, randomUUID, sharedFixture, userRow } from '../fixture.js';

const fx = sharedFixture();
beforeAll(fx.start);
afterAll(fx.close);

test('pushes keep committing after the business table gains a column and an index', async () => {
  const d = await emptyScopeDevice(fx.app);
  const push = async (n: number) => {
    // concurrent pushes of several devices spread the statement over the pool's connections
    const devices = await Promise.all(Array.from({ length: n }, () => emptyScopeDevice(fx.app)));
    const answers = await Promise.all(
      devices.map((x) =>
        x.json('POST', '/sync/push', { source_bundle_id: 1, rows: [userRow(randomUUID(), 'u')] }),
      ),
    );
    return answers.map((a) => a.status);
  };
  expect(await push(8)).toEqual(Array(8).fill(200));

  await fx.cluster.exec('ALTER TABLE business.users ADD COLUMN nickname TEXT');
  expect(await push(8)).toEqual(Array(8).fill(200));
  await fx.cluster.exec('CREATE INDEX users_nickname_idx ON business.users (nickname)');
  expect(await push(8)).toEqual(Array(8).fill(200));

  // and the rows are there, the new column empty
  const first = await d.json('POST', '/sync/push', {
    source_bundle_id: 1,
    rows: [userRow(randomUUID(), 'last')],
  });
  expect(first.status).toBe(200);
  const stored = await fx.cluster.query<{ n: number; named: number }>(
    "SELECT count(*)::int AS n, count(nickname)::int AS named FROM business.users WHERE name IN ('u', 'last')",
  );
  expect(stored.rows[0]).toEqual({ n: 25, named: 0 });
});
