import { type Cluster, createCluster } from '@x/dbx';
import {
  createSyncService,
  DEFAULT_SYNC_KEY_COLUMNS,
  isSyncServerError,
  oversyncFastifyPlugin,
  type SyncServerError,
  type SyncServiceOptions,
} from '@x/oversync/server';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

let db: TestDatabase;
let cluster: Cluster;
beforeAll(async () => {
  db = await createTestDatabase({ prefix: 'oversync_boot' });
  cluster = createCluster({ primary: db.url });
});
afterAll(async () => {
  await cluster?.close();
  await db?.drop();
});

let n = 0;
/** A fresh schema holding `ddl` (with `S` replaced by the schema name). */
async function schema(ddl: string): Promise<string> {
  const s = `t${++n}`;
  await cluster.exec(`CREATE SCHEMA ${s}; ${ddl.replaceAll('S.', `${s}.`)}`);
  return s;
}
async function bootstrapError(
  tables: SyncServiceOptions['registeredTables'],
  extra: Partial<SyncServiceOptions> = {},
) {
  const svc = createSyncService({ db: cluster, registeredTables: tables, ...extra });
  try {
    await svc.bootstrap();
    return undefined;
  } catch (e) {
    expect(isSyncServerError(e)).toBe(true);
    return e as Error & { code: string };
  } finally {
    await svc.close();
  }
}
const GOOD = `CREATE TABLE S.p (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT, PRIMARY KEY (_sync_scope_id, id));`;

describe('bootstrap fails closed on unsupported shapes (UnsupportedSchemaError)', () => {
  test.each([
    // Sync key lists that cannot work (none, two, the scope column) are refused at construction:
    // options.test.ts.
    ['a missing table', '', ['id'], /does not exist/],
    [
      'no scope column',
      'CREATE TABLE S.p (id UUID PRIMARY KEY);',
      ['id'],
      /must have a _sync_scope_id column/,
    ],
    [
      'a non-text scope column',
      'CREATE TABLE S.p (_sync_scope_id INT, id UUID, PRIMARY KEY (_sync_scope_id, id));',
      ['id'],
      /must be text/,
    ],
    [
      'an integer key',
      'CREATE TABLE S.p (_sync_scope_id TEXT, id BIGINT, PRIMARY KEY (_sync_scope_id, id));',
      ['id'],
      /allows only uuid and text/,
    ],
    [
      'no unique index',
      'CREATE TABLE S.p (_sync_scope_id TEXT, id UUID);',
      ['id'],
      /must have a unique index/,
    ],
    [
      'PRIMARY KEY (id) alone',
      'CREATE TABLE S.p (_sync_scope_id TEXT, id UUID PRIMARY KEY);',
      ['id'],
      /must start with _sync_scope_id/,
    ],
    [
      'a partial unique index',
      `${GOOD} CREATE UNIQUE INDEX ON S.p (_sync_scope_id, name) WHERE name IS NOT NULL;`,
      ['id'],
      /partial or expression/,
    ],
    [
      'an expression unique index',
      `${GOOD} CREATE UNIQUE INDEX ON S.p (_sync_scope_id, lower(name));`,
      ['id'],
      /partial or expression/,
    ],
    [
      'a key index with extra columns',
      'CREATE TABLE S.p (_sync_scope_id TEXT, id UUID, v INT, PRIMARY KEY (_sync_scope_id, id, v));',
      ['id'],
      /exactly \(_sync_scope_id, id\)/,
    ],
  ])('rejects %s', async (_name, ddl, keys, message) => {
    const s = await schema(ddl);
    const e = await bootstrapError([{ schema: s, table: 'p', syncKeyColumns: keys }]);
    expect(e?.code).toBe('OVERSYNC_UNSUPPORTED_SCHEMA');
    expect(e?.name).toBe('UnsupportedSchemaError');
    expect(e?.message).toMatch(message);
  });

  test.each([
    [
      'an FK to an unregistered parent',
      'CREATE TABLE S.other (_sync_scope_id TEXT, id UUID, PRIMARY KEY (_sync_scope_id, id)); CREATE TABLE S.c (_sync_scope_id TEXT, id UUID, o UUID, PRIMARY KEY (_sync_scope_id, id), FOREIGN KEY (_sync_scope_id, o) REFERENCES S.other DEFERRABLE);',
      /not FK-closed/,
    ],
    [
      'an FK not referencing the parent sync key',
      `${GOOD} CREATE UNIQUE INDEX p_name ON S.p (_sync_scope_id, name); ALTER TABLE S.p ADD CONSTRAINT p_name_key UNIQUE USING INDEX p_name; CREATE TABLE S.c (_sync_scope_id TEXT, id UUID, pn TEXT, PRIMARY KEY (_sync_scope_id, id), FOREIGN KEY (_sync_scope_id, pn) REFERENCES S.p (_sync_scope_id, name) DEFERRABLE);`,
      /must be scope-inclusive and reference/,
    ],
    [
      'a non-deferrable FK',
      `${GOOD} CREATE TABLE S.c (_sync_scope_id TEXT, id UUID, p UUID, PRIMARY KEY (_sync_scope_id, id), CONSTRAINT c_p_fk FOREIGN KEY (_sync_scope_id, p) REFERENCES S.p);`,
      /non-deferrable FK constraints: t\d+\.c_p_fk/,
    ],
    [
      'MATCH FULL',
      `${GOOD} CREATE TABLE S.c (_sync_scope_id TEXT, id UUID, p UUID, PRIMARY KEY (_sync_scope_id, id), FOREIGN KEY (_sync_scope_id, p) REFERENCES S.p MATCH FULL DEFERRABLE);`,
      /MATCH FULL/,
    ],
  ])('rejects %s', async (_name, ddl, message) => {
    const s = await schema(ddl);
    const tables = [{ schema: s, table: 'c', syncKeyColumns: ['id'] }];
    if (ddl.includes('S.p ')) tables.push({ schema: s, table: 'p', syncKeyColumns: ['id'] });
    const e = await bootstrapError(tables);
    expect(e?.code).toBe('OVERSYNC_UNSUPPORTED_SCHEMA');
    expect(e?.message).toMatch(message);
  });

  test('invalid options throw OVERSYNC_INVALID_OPTIONS', () => {
    expect(() => createSyncService({ db: cluster, registeredTables: [] })).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_INVALID_OPTIONS' }),
    );
    expect(() =>
      createSyncService({
        db: {} as never,
        registeredTables: [{ schema: 's', table: 't', syncKeyColumns: ['id'] }],
      }),
    ).toThrow(expect.objectContaining({ code: 'OVERSYNC_INVALID_OPTIONS' }));
    expect(() =>
      createSyncService({
        db: cluster,
        registeredTables: [{ schema: 's', table: 't', syncKeyColumns: ['id'] }],
        bundleChangeWatch: { enabled: true, notifyChannel: 'x'.repeat(64) },
      }),
    ).toThrow(expect.objectContaining({ code: 'OVERSYNC_INVALID_OPTIONS' }));
    const svc = createSyncService({
      db: cluster,
      registeredTables: [{ table: 't', syncKeyColumns: ['id'] }],
    });
    expect(Object.isFrozen(svc.options)).toBe(true);
    expect(svc.options.limits.pushSessionTtlMs).toBe(15 * 60_000);
    expect(svc.options.registeredTables[0]!.schema).toBe('public');
  });
});

describe('a successful bootstrap', () => {
  test('an unrelated object in schema sync is refused', async () => {
    const s = await schema(GOOD);
    await cluster.exec('CREATE SCHEMA sync; CREATE TABLE sync.legacy (x int)');
    const e = await bootstrapError([{ schema: s, table: 'p', syncKeyColumns: ['id'] }]);
    expect(e?.message).toMatch(/unsupported layout/);
    await cluster.exec('DROP SCHEMA sync CASCADE');
  });

  test('creates the layout, installs triggers, orders tables (cycles grouped, overrides applied), is idempotent and restart-only', async () => {
    const s = await schema(`
      CREATE TABLE S.a (_sync_scope_id TEXT, id TEXT, b_id TEXT, PRIMARY KEY (_sync_scope_id, id));
      CREATE TABLE S.b (_sync_scope_id TEXT, id TEXT, a_id TEXT, PRIMARY KEY (_sync_scope_id, id),
        FOREIGN KEY (_sync_scope_id, a_id) REFERENCES S.a DEFERRABLE INITIALLY DEFERRED);
      ALTER TABLE S.a ADD FOREIGN KEY (_sync_scope_id, b_id) REFERENCES S.b DEFERRABLE;
      CREATE TABLE S.z (_sync_scope_id TEXT, id UUID, PRIMARY KEY (_sync_scope_id, id));
      CREATE TABLE S.child (_sync_scope_id TEXT, id UUID, z_id UUID, parent UUID, PRIMARY KEY (_sync_scope_id, id),
        FOREIGN KEY (_sync_scope_id, z_id) REFERENCES S.z ON DELETE CASCADE DEFERRABLE,
        FOREIGN KEY (_sync_scope_id, parent) REFERENCES S.child ON DELETE SET NULL DEFERRABLE);`);
    const tables = ['a', 'b', 'z', 'child'].map((table) => ({ schema: s, table, syncKeyColumns: ['id'] }));
    const svc = createSyncService({
      db: cluster,
      registeredTables: tables,
      dependencyOverrides: { [`${s}.a`]: [`${s}.child`] },
    });
    await svc.bootstrap();
    await svc.bootstrap(); // memoised
    const d = svc.discoveredSchema!;
    expect(d.tableOrder).toEqual([`${s}.z`, `${s}.child`, `${s}.a`, `${s}.b`]);
    expect([...d.cycles.values()]).toEqual([[`${s}.a`, `${s}.b`]]);
    await svc.close();

    const again = createSyncService({ db: cluster, registeredTables: tables });
    await again.bootstrap(); // a restart validates the existing layout
    await again.close();
    const catalog = await cluster.query<{
      table_id: number;
      schema_name: string;
      table_name: string;
      sync_key_kind: number;
    }>('SELECT table_id, schema_name, table_name, sync_key_kind FROM sync.table_catalog ORDER BY table_id');
    expect(catalog.rows).toEqual([
      { table_id: 1, schema_name: s, table_name: 'a', sync_key_kind: 2 },
      { table_id: 2, schema_name: s, table_name: 'b', sync_key_kind: 2 },
      { table_id: 3, schema_name: s, table_name: 'child', sync_key_kind: 1 },
      { table_id: 4, schema_name: s, table_name: 'z', sync_key_kind: 1 },
    ]);
    const triggers = await cluster.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM pg_trigger
        WHERE tgname IN ('oversync_bundle_owner_guard', 'oversync_bundle_owner_guard_insert',
                         'oversync_bundle_capture_row', 'oversync_bundle_capture_insert')`,
    );
    expect(triggers.rows[0]!.n).toBe('16');
    const meta = await cluster.query('SELECT singleton_key, protocol_label, layout_name FROM sync.meta');
    expect(meta.rows).toEqual([
      { singleton_key: true, protocol_label: 'v1', layout_name: 'server_postgres_sync_v1' },
    ]);
    for (const absent of ['sync.applied_pushes']) {
      expect(
        (await cluster.query<{ r: string | null }>('SELECT to_regclass($1)::text AS r', [absent])).rows[0]!.r,
      ).toBeNull();
    }
    // changing the registered set needs a dropped sync schema
    const changed = await bootstrapError(tables.slice(0, 2));
    expect(changed?.message).toMatch(/does not match the registered tables/);
    // concurrent bootstraps of several processes serialise on the advisory lock
    const many = Array.from({ length: 3 }, () =>
      createSyncService({ db: cluster, registeredTables: tables }),
    );
    await Promise.all(many.map((m) => m.bootstrap()));
    await Promise.all(many.map((m) => m.close()));
  });
});

const table = { schema: 'business', table: 'users', syncKeyColumns: ['id'] };

/** The OVERSYNC_INVALID_OPTIONS error `createSyncService` throws for `extra` over valid options. */
function refusal(extra: Record<string, unknown>): SyncServerError {
  try {
    createSyncService({ db: cluster, registeredTables: [table], ...extra } as SyncServiceOptions);
  } catch (e) {
    if (isSyncServerError(e) && e.code === 'OVERSYNC_INVALID_OPTIONS') return e;
    throw e;
  }
  throw new Error(`options were accepted: ${JSON.stringify(Object.keys(extra))}`);
}

describe('sync service options: one rule (unknown keys refused, defaults that work)', () => {
  test('refuses an unknown top-level key, naming it', () => {
    expect(refusal({ maxReplicaLag: 5 }).message).toContain('maxReplicaLag: unknown option');
  });

  test('refuses unknown nested keys, naming their path', () => {
    expect(refusal({ limits: { maxRowsPerPushChunks: 10 } }).message).toContain(
      'limits.maxRowsPerPushChunks: unknown option',
    );
    expect(refusal({ bundleChangeWatch: { enable: true } }).message).toContain(
      'bundleChangeWatch.enable: unknown option',
    );
    expect(refusal({ registeredTables: [{ ...table, syncKey: 'id' }] }).message).toContain(
      'registeredTables.0.syncKey: unknown option',
    );
  });

  test('refuses a logger without the four methods', () => {
    expect(refusal({ logger: { warn: () => {} } }).message).toContain('logger: logger must have');
  });

  test('syncKeyColumns that cannot work are refused at construction, not at bootstrap', () => {
    const keys = (syncKeyColumns: string[]) =>
      refusal({ registeredTables: [{ schema: 'business', table: 'users', syncKeyColumns }] }).message;
    expect(keys([])).toMatch(/registeredTables\.0\.syncKeyColumns: must name exactly one sync key column/);
    expect(keys([' ', ''])).toMatch(/must name exactly one sync key column/);
    expect(keys(['id', 'name'])).toMatch(/must name exactly one sync key column .*got \["id","name"\]/);
    expect(keys(['_sync_scope_id'])).toMatch(/_sync_scope_id is the scope column/);
  });

  test('without syncKeyColumns a table is keyed by id (as on the client) and bootstraps', async () => {
    const s = await schema(GOOD);
    await cluster.exec('DROP SCHEMA IF EXISTS sync CASCADE'); // a layout of an earlier test
    const svc = createSyncService({ db: cluster, registeredTables: [{ schema: s, table: 'p' }] });
    try {
      expect(svc.options.registeredTables[0]!.syncKeyColumns).toEqual([...DEFAULT_SYNC_KEY_COLUMNS]);
      await svc.bootstrap();
      const catalog = await cluster.query<{ sync_key_column: string }>(
        'SELECT sync_key_column FROM sync.table_catalog',
      );
      expect(catalog.rows).toEqual([{ sync_key_column: 'id' }]);
    } finally {
      await svc.close();
      await cluster.exec('DROP SCHEMA IF EXISTS sync CASCADE');
    }
  });
});

describe('fastify plugin options', () => {
  async function register(options: Record<string, unknown>): Promise<unknown> {
    const service = createSyncService({ db: cluster, registeredTables: [table] });
    const app = Fastify({ logger: false });
    try {
      await app.register(oversyncFastifyPlugin, {
        service,
        userIdFromRequest: () => 'u',
        ...options,
      } as never);
      await app.ready();
      return undefined;
    } catch (e) {
      return e;
    } finally {
      await app.close();
      await service.close();
    }
  }

  test('refuses an unknown key with OVERSYNC_INVALID_OPTIONS naming it', async () => {
    const e = await register({ bodyLimitBytes: 1024 });
    expect(e).toMatchObject({ code: 'OVERSYNC_INVALID_OPTIONS' });
    expect((e as Error).message).toContain('bodyLimitBytes: unknown option');
  });

  test("accepts fastify's own registration options", async () => {
    expect(await register({ prefix: '/api', bodyLimit: 1024 })).toBeUndefined();
  });

  test('refuses an object that is not a sync service', async () => {
    const e = await register({ service: {} });
    expect(e).toMatchObject({ code: 'OVERSYNC_INVALID_OPTIONS' });
    expect((e as Error).message).toContain('service: expected a sync service');
  });
});
