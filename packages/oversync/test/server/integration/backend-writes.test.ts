/**
 * Backend writes that sync (issue #20, point 3): ordinary SQL from a bare `pg` client (no @x code)
 * on tables registered with `backendWrites: true` becomes one committed bundle per affected scope at
 * COMMIT, which `/sync/pull` serves with the same row versions and a bundle hash the client
 * recomputes; writes no scope owns are refused with SQLSTATE OV001, scope moves with OV002, and
 * tables not opted in keep refusing writes without bundle context.
 */
import { computeBundleHash } from '@x/oversync';
import { createSyncService } from '@x/oversync/server';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  BUSINESS_TABLES,
  createFixture,
  type Device,
  emptyScopeDevice,
  type Fixture,
  insertRow,
  randomUUID,
  userRow,
} from '../fixture.js';

// Every business table opts in except the teams / team_members FK cycle.
const TABLES = BUSINESS_TABLES.map((t) => ({ ...t, backendWrites: !t.table.startsWith('team') }));

let fx: Fixture;
let sql: pg.Client;
beforeAll(async () => {
  fx = await createFixture({
    service: {
      registeredTables: TABLES,
      bundleChangeWatch: { enabled: true },
      limits: { retainedBundlesPerUser: 10, retentionPruneBatchSize: 10 },
    },
  });
  sql = new pg.Client({ connectionString: fx.db.url });
  await sql.connect();
});
afterAll(async () => {
  await sql?.end();
  await fx?.close();
});

interface PulledBundle {
  bundle_seq: number;
  source_id: string;
  source_bundle_id: number;
  bundle_hash: string;
  rows: Array<{
    schema: string;
    table: string;
    key: { id: string };
    op: string;
    row_version: number;
    payload?: Record<string, unknown>;
  }>;
}

/** Pulls after `after` and checks every bundle's hash as a client does. */
async function pullChecked(d: Device, after = 0): Promise<PulledBundle[]> {
  const res = await d.pull(after);
  expect(res.status).toBe(200);
  const bundles = res.body['bundles'] as PulledBundle[];
  for (const b of bundles) expect(computeBundleHash(b.rows as never).hex).toBe(b.bundle_hash);
  return bundles;
}

async function inTx(client: pg.Client, fn: () => Promise<void>): Promise<void> {
  await client.query('BEGIN');
  try {
    await fn();
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK');
    throw e;
  }
}

async function sqlError(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected the statement to fail');
}

describe('backend writes that sync', () => {
  test('INSERT, UPDATE, DELETE from a bare pg client: one bundle per transaction, pulled with versions and hash', async () => {
    const d = await emptyScopeDevice(fx.app);
    const a = randomUUID();
    const b = randomUUID();
    await inTx(sql, async () => {
      await sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'Ann', 'a<&>@x'), ($1, $3, 'Bob', 'b@x')`,
        [d.userId, a, b],
      );
    });
    let bundles = await pullChecked(d);
    expect(bundles).toHaveLength(1);
    expect(bundles[0]).toMatchObject({
      bundle_seq: 1,
      source_id: 'oversync-backend-writes',
      source_bundle_id: 1,
    });
    expect(bundles[0]!.rows.map((r) => [r.op, r.key.id, r.row_version, r.payload?.['name']])).toEqual([
      ['INSERT', a, 1, 'Ann'],
      ['INSERT', b, 1, 'Bob'],
    ]);
    expect(bundles[0]!.rows[0]!.payload).toMatchObject({ id: a, email: 'a<&>@x' });
    expect(bundles[0]!.rows[0]!.payload).not.toHaveProperty('_sync_scope_id');

    // a plain UPDATE and a DELETE, autocommit: one bundle each
    await sql.query(`UPDATE business.users SET name = 'Ann 2' WHERE _sync_scope_id = $1 AND id = $2`, [
      d.userId,
      a,
    ]);
    await sql.query('DELETE FROM business.users WHERE _sync_scope_id = $1 AND id = $2', [d.userId, b]);
    bundles = await pullChecked(d, 1);
    expect(bundles.map((x) => x.rows.map((r) => [r.op, r.key.id, r.row_version]))).toEqual([
      [['UPDATE', a, 2]],
      [['DELETE', b, 3]],
    ]);
    expect(bundles[0]!.rows[0]!.payload).toMatchObject({ name: 'Ann 2' });

    // inserted and deleted in one transaction: nothing to sync, no bundle_seq consumed
    const c = randomUUID();
    await inTx(sql, async () => {
      await sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'x', 'x')`,
        [d.userId, c],
      );
      await sql.query('DELETE FROM business.users WHERE id = $1', [c]);
    });
    expect(await pullChecked(d, 3)).toEqual([]);
    const next = await fx.cluster.query<{ next: string }>(
      'SELECT next_bundle_seq::text AS next FROM sync.user_state WHERE user_id = $1',
      [d.userId],
    );
    expect(next.rows[0]!.next).toBe('4');
    // the device's own push then sees the backend's version as the base
    const push = await d.push([userRow(a, 'from device', 2, 'UPDATE')]);
    expect(push.status).toBe(200);
    expect(push.body['bundle_seq']).toBe(4);
  });

  test('typed values, bytea and nested JSON hash exactly like the TypeScript capture path', async () => {
    const d = await emptyScopeDevice(fx.app);
    const twin = await emptyScopeDevice(fx.app);
    const id = randomUUID();
    const values = {
      name: 'caf\u00e9 \u2028 <b> "q" \\ \n \u0001 \u{1F600}',
      note: null,
      count_value: '9007199254740993',
      enabled_flag: 1,
      rating: 1e21,
      data: Buffer.from('hello bytes, long enough to wrap base64 lines at seventy-six characters or so!!'),
      created_at: '2024-01-02T03:04:05.678Z',
    };
    const insert = `INSERT INTO business.typed_rows (_sync_scope_id, id, name, note, count_value, enabled_flag, rating, data, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`;
    const params = (scope: string, rating: number) => [
      scope,
      id,
      values.name,
      values.note,
      values.count_value,
      values.enabled_flag,
      rating,
      values.data,
      values.created_at,
    ];
    for (const rating of [1e21, 0.1, 1e-7, 1.5e-6, 123456789012345680000, -0.000001, 3]) {
      await inTx(sql, async () => {
        await sql.query('DELETE FROM business.typed_rows WHERE _sync_scope_id = $1', [d.userId]);
        await sql.query(insert, params(d.userId, rating));
      });
      await fx.service.withinSyncBundle(
        { userId: twin.userId },
        { sourceId: 'twin', sourceBundleId: await nextSourceBundleId(twin.userId) },
        async (tx) => {
          await tx.query('DELETE FROM business.typed_rows WHERE _sync_scope_id = $1', [twin.userId]);
          await tx.query(insert, params(twin.userId, rating));
        },
      );
    }
    const mine = await pullChecked(d);
    const theirs = await pullChecked(twin);
    expect(mine.map((b) => b.rows.map((r) => JSON.stringify(r.payload ?? null)))).toEqual(
      theirs.map((b) => b.rows.map((r) => JSON.stringify(r.payload ?? null))),
    );
    expect(mine.map((b) => b.bundle_hash)).toEqual(theirs.map((b) => b.bundle_hash));
    // and the stored wire payload text is byte-identical to what the TypeScript path stores
    const stored = await fx.cluster.query<{ user_id: string; texts: string[] }>(
      `SELECT u.user_id, array_agg(r.payload_wire::text ORDER BY r.bundle_seq, r.row_ordinal) AS texts
         FROM sync.bundle_rows r JOIN sync.user_state u USING (user_pk) WHERE u.user_id = ANY($1) GROUP BY u.user_id`,
      [[d.userId, twin.userId]],
    );
    expect(stored.rows).toHaveLength(2);
    expect(stored.rows[0]!.texts).toEqual(stored.rows[1]!.texts);
  });

  test('canonical JSON in SQL equals the TypeScript encoder for nested documents', async () => {
    const { canonicalJson } = await import('@x/oversync');
    // JSON texts, as PostgreSQL receives them (numbers beyond 2^53 included).
    const docs = [
      JSON.stringify({
        b: [1, 2.5, { z: null, a: true }],
        a: 'x<y>&z',
        '\u00e9': 1e-7,
        '\u{1F600}': 'e',
        '\uFFFF': 0,
      }),
      '[1e21, 1e20, -1.25e-5, 0.1, 100, 12345678901234567890, 1.10, 2e-7, 123456789012345678901234]',
      JSON.stringify('line\u2029sep\u0007'),
      '{}',
      '[]',
    ];
    for (const doc of docs) {
      const r = await fx.cluster.query<{ t: string }>('SELECT sync.go_canonical_json($1::jsonb) AS t', [doc]);
      expect(r.rows[0]!.t).toBe(canonicalJson(JSON.parse(doc)));
    }
  });

  test('an FK cascade and a multi-scope transaction: one bundle per scope', async () => {
    const d1 = await emptyScopeDevice(fx.app);
    const d2 = await emptyScopeDevice(fx.app);
    const file = randomUUID();
    const review = randomUUID();
    const seed = await d1.push([
      insertRow('files', { id: file, name: 'f', data: Buffer.from('x').toString('base64') }),
      insertRow('file_reviews', { id: review, review: 'ok', file_id: file }),
    ]);
    expect(seed.status).toBe(200);
    const u2 = randomUUID();
    await inTx(sql, async () => {
      await sql.query('DELETE FROM business.files WHERE _sync_scope_id = $1 AND id = $2', [d1.userId, file]);
      await sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'two', 't')`,
        [d2.userId, u2],
      );
    });
    const b1 = await pullChecked(d1, 1);
    expect(b1).toHaveLength(1);
    expect(b1[0]!.rows.map((r) => [r.table, r.op, r.key.id, r.row_version]).sort()).toEqual(
      [
        ['file_reviews', 'DELETE', review, 2],
        ['files', 'DELETE', file, 2],
      ].sort(),
    );
    const b2 = await pullChecked(d2);
    expect(b2.map((b) => b.rows.map((r) => [r.table, r.op, r.key.id, r.row_version]))).toEqual([
      [['users', 'INSERT', u2, 1]],
    ]);
  });

  test('unattributable writes are refused with OV001, scope moves with OV002; nothing is staged', async () => {
    const d = await emptyScopeDevice(fx.app);
    const id = randomUUID();
    const empty = await sqlError(
      sql.query(`INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ('', $1, 'x', 'x')`, [
        id,
      ]),
    );
    expect(empty.code).toBe('OV001');
    expect(empty.message).toBe(
      'oversync: backend write to registered table business.users cannot be attributed to a scope',
    );
    const nulls = await sqlError(
      sql.query(`INSERT INTO business.categories (_sync_scope_id, id, name) VALUES (NULL, $1, 'x')`, [id]),
    );
    expect(nulls.code).toBe('OV001');
    const unknown = await sqlError(
      sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ('nobody-${id}', $1, 'x', 'x')`,
        [id],
      ),
    );
    expect(unknown).toMatchObject({ code: 'OV001', detail: expect.stringContaining('is not initialized') });
    // a user whose scope exists but is not initialized (connect with pending rows does not initialize)
    const pending = `pending-${id}`;
    await fx.cluster.query('INSERT INTO sync.user_state (user_id) VALUES ($1)', [pending]);
    await fx.cluster.query(
      'INSERT INTO sync.scope_state (user_pk, state_code) SELECT user_pk, 0 FROM sync.user_state WHERE user_id = $1',
      [pending],
    );
    expect(
      await sqlError(
        sql.query(`INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'x', 'x')`, [
          pending,
          id,
        ]),
      ),
    ).toMatchObject({ code: 'OV001' });

    await sql.query(
      `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'x', 'x')`,
      [d.userId, id],
    );
    const other = await emptyScopeDevice(fx.app);
    const move = await sqlError(
      sql.query('UPDATE business.users SET _sync_scope_id = $1 WHERE id = $2', [other.userId, id]),
    );
    expect(move.code).toBe('OV002');
    const stage = await fx.cluster.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM sync.bundle_capture_stage',
    );
    expect(stage.rows[0]!.n).toBe(0);
    const pend = await fx.cluster.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM sync.backend_bundle_pending',
    );
    expect(pend.rows[0]!.n).toBe(0);
  });

  test('TRUNCATE of an opted-in table is refused with OV003', async () => {
    const e = await sqlError(sql.query('TRUNCATE business.users CASCADE'));
    expect(e).toMatchObject({
      code: 'OV003',
      message: 'oversync: TRUNCATE of registered table business.users cannot be synced',
    });
  });

  test('tables not opted in keep refusing writes without bundle context', async () => {
    const d = await emptyScopeDevice(fx.app);
    const e = await sqlError(
      sql.query(`INSERT INTO business.teams (_sync_scope_id, id, name) VALUES ($1, $2, 't')`, [
        d.userId,
        randomUUID(),
      ]),
    );
    expect(e).toMatchObject({
      code: 'P0001',
      message: 'write to registered table business.teams requires oversync sync bundle context',
    });
  });

  test('concurrent backend transactions on one scope both land, with consecutive bundle seqs', async () => {
    const d = await emptyScopeDevice(fx.app);
    const other = new pg.Client({ connectionString: fx.db.url });
    await other.connect();
    try {
      const ids = [randomUUID(), randomUUID()];
      await sql.query('BEGIN');
      await sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'one', 'o')`,
        [d.userId, ids[0]],
      );
      // the second transaction waits for the scope's lock until the first commits
      const second = inTx(other, async () => {
        await other.query(
          `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'two', 't')`,
          [d.userId, ids[1]],
        );
      });
      await waitForLockWaiter();
      await sql.query('COMMIT');
      await second;
      const bundles = await pullChecked(d);
      expect(bundles.map((b) => [b.bundle_seq, b.rows.map((r) => r.key.id)])).toEqual([
        [1, [ids[0]]],
        [2, [ids[1]]],
      ]);
    } finally {
      await other.end();
    }
  });

  test('a push waits for an open backend transaction of its user; both commit in order', async () => {
    const d = await emptyScopeDevice(fx.app);
    const a = randomUUID();
    const seed = await d.push([userRow(a, 'seed')]);
    expect(seed.body['bundle_seq']).toBe(1);
    await sql.query('BEGIN');
    await sql.query(`UPDATE business.users SET name = 'backend' WHERE _sync_scope_id = $1 AND id = $2`, [
      d.userId,
      a,
    ]);
    const b = randomUUID();
    const push = d.push([userRow(b, 'pushed')]);
    await waitForLockWaiter();
    await sql.query('COMMIT');
    expect((await push).body).toMatchObject({ bundle_seq: 3 });
    const bundles = await pullChecked(d, 1);
    expect(
      bundles.map((x) => [x.bundle_seq, x.source_id, x.rows.map((r) => [r.op, r.key.id, r.row_version])]),
    ).toEqual([
      [2, 'oversync-backend-writes', [['UPDATE', a, 2]]],
      [3, d.sourceId, [['INSERT', b, 3]]],
    ]);
    // a push based on the version before the backend write conflicts
    const stale = await d.push([userRow(a, 'stale', 1, 'UPDATE')]);
    expect(JSON.stringify(stale.body)).toContain('conflict');
  });

  test('NOTIFY on commit, and retention prunes like after any bundle', async () => {
    const d = await emptyScopeDevice(fx.app);
    const listener = new pg.Client({ connectionString: fx.db.url });
    await listener.connect();
    try {
      const notes: string[] = [];
      listener.on('notification', (n) => notes.push(n.payload ?? ''));
      await listener.query('LISTEN oversync_bundle_change_v1');
      const id = randomUUID();
      await sql.query(
        `INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'n0', 'n')`,
        [d.userId, id],
      );
      for (let i = 1; i <= 11; i++)
        await sql.query('UPDATE business.users SET name = $3 WHERE _sync_scope_id = $1 AND id = $2', [
          d.userId,
          id,
          `n${i}`,
        ]);
      const pk = await fx.cluster.query<{ pk: string; floor: string }>(
        'SELECT user_pk::text AS pk, retained_bundle_floor::text AS floor FROM sync.user_state WHERE user_id = $1',
        [d.userId],
      );
      for (
        let i = 0;
        i < 50 && notes.filter((n) => n.includes(`"user_pk":${pk.rows[0]!.pk},`)).length < 12;
        i++
      )
        await new Promise((r) => setTimeout(r, 20));
      const mine = notes
        .map((n) => JSON.parse(n) as Record<string, unknown>)
        .filter((n) => String(n['user_pk']) === pk.rows[0]!.pk);
      expect(mine.map((n) => n['bundle_seq'])).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      expect(mine[0]).toMatchObject({ source_id: 'oversync-backend-writes', source_bundle_id: 1 });
      expect(pk.rows[0]!.floor).toBe('2');
      // 12 bundles, 10 retained: the floor is 2, as after pushed bundles
      expect((await d.pull(2)).status).toBe(409);
      expect((await pullChecked(d, 2 + 1)).map((b) => b.bundle_seq)).toEqual([4, 5, 6, 7, 8, 9, 10, 11, 12]);
    } finally {
      await listener.end();
    }
  });
});

describe('opting in and out', () => {
  test('backendWrites is a strictly validated boolean option, false by default', () => {
    const opts = (backendWrites: unknown) => ({
      db: fx.cluster,
      registeredTables: [{ schema: 'business', table: 'users', backendWrites }] as never,
    });
    expect(createSyncService(opts(undefined)).options.registeredTables[0]).toMatchObject({
      backendWrites: false,
    });
    expect(() => createSyncService(opts('yes'))).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_INVALID_OPTIONS' }) as never,
    );
  });

  test('a later bootstrap without the option refuses backend writes again; opting back in accepts them', async () => {
    const d = await emptyScopeDevice(fx.app);
    const insert = () =>
      sql.query(`INSERT INTO business.users (_sync_scope_id, id, name, email) VALUES ($1, $2, 'x', 'x')`, [
        d.userId,
        randomUUID(),
      ]);
    const off = createSyncService({ db: fx.cluster, registeredTables: BUSINESS_TABLES });
    await off.bootstrap();
    await off.close();
    expect(await sqlError(insert())).toMatchObject({ code: 'P0001' });
    const on = createSyncService({
      db: fx.cluster,
      registeredTables: TABLES,
      bundleChangeWatch: { enabled: true },
      limits: { retainedBundlesPerUser: 10, retentionPruneBatchSize: 10 },
    });
    await on.bootstrap();
    await on.close();
    await insert();
    expect((await pullChecked(d)).map((b) => b.source_id)).toEqual(['oversync-backend-writes']);
  });
});

async function nextSourceBundleId(userId: string): Promise<number> {
  const r = await fx.cluster.query<{ max: string | null }>(
    `SELECT max(s.max_committed_source_bundle_id)::text AS max FROM sync.source_state s
       JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1 AND s.source_id = 'twin'`,
    [userId],
  );
  return Number(r.rows[0]?.max ?? 0) + 1;
}

/** Resolves once some backend waits on an advisory lock (the scope lock a pending write holds). */
async function waitForLockWaiter(): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const r = await fx.cluster.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`,
    );
    if (r.rows[0]!.n > 0) return;
    await new Promise((res) => setTimeout(res, 10));
  }
  throw new Error('no transaction waited for the scope lock');
}
