// The snapshot renders payloads column by column (payload-sql.ts) instead of the reference's
// `to_jsonb(row) - '_sync_scope_id'`. These tests hold the two to the same JSON value on a real
// PostgreSQL, over every type family the encoder treats specially and generated text, and check that
// a column added after bootstrap still reaches snapshots.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type CatalogColumn,
  CURRENT_COLUMNS_SQL,
  payloadTextSql,
} from '../../../src/server/internal/payload-sql.js';
import { createFixture, Device, type Fixture, randomUUID } from '../fixture.js';

const SCHEMA = `CREATE SCHEMA business;
CREATE TYPE business.mood AS ENUM ('ok', 'meh');
CREATE DOMAIN business.short_text AS TEXT CHECK (length(VALUE) < 100);
CREATE TABLE business.kinds (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL,
  t TEXT, vc VARCHAR(40), bc CHAR(5), nm NAME, i2 SMALLINT, i4 INTEGER, i8 BIGINT, num NUMERIC,
  f4 REAL, f8 DOUBLE PRECISION, b BOOLEAN, d DATE, ts TIMESTAMP, tstz TIMESTAMPTZ, ti TIME, iv INTERVAL,
  js JSON, jb JSONB, ia INTEGER[], ta TEXT[], mood business.mood, st business.short_text, bin BYTEA,
  u2 UUID, x9 TEXT, longer_column_name_here TEXT,
  PRIMARY KEY (_sync_scope_id, id));`;

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture({
    schemaSql: SCHEMA,
    service: { registeredTables: [{ schema: 'business', table: 'kinds', syncKeyColumns: ['id'] }] },
  });
});
afterAll(async () => {
  await fx?.close();
});

async function columns(): Promise<CatalogColumn[]> {
  const r = await fx.cluster.query<{ name: string; type: string }>(CURRENT_COLUMNS_SQL, [['business.kinds']]);
  return r.rows.map((c) => ({ name: c.name, type: c.type }));
}

/** [reference, ours] payload texts of every row of `scope`. */
async function render(scope: string): Promise<Array<[string, string]>> {
  const ours = payloadTextSql(await columns(), '_sync_scope_id', new Set(['bin']));
  const ref = `(to_jsonb(src) - '_sync_scope_id') || jsonb_build_object('bin', translate(encode(src.bin, 'base64'), E'\\n', ''))`;
  const r = await fx.cluster.query<{ ref: string; ours: string }>(
    `SELECT (${ref})::text AS ref, ${ours} AS ours FROM business.kinds src WHERE _sync_scope_id = $1 ORDER BY id`,
    [scope],
  );
  return r.rows.map((x) => [x.ref, x.ours]);
}

/** Inserts rows bypassing the sync triggers (this test only renders them). */
async function insert(scope: string, rows: Array<Record<string, unknown>>) {
  await fx.cluster.runTx(async (tx) => {
    await tx.query('SET LOCAL session_replication_role = replica');
    for (const row of rows) {
      const cols = Object.keys(row);
      await tx.query(
        `INSERT INTO business.kinds (_sync_scope_id, id${cols.map((c) => `, "${c}"`).join('')})
         VALUES ($1, gen_random_uuid()${cols.map((_, i) => `, $${i + 2}`).join('')})`,
        [scope, ...cols.map((c) => row[c])],
      );
    }
  });
}

describe('snapshot payload rendering', () => {
  test('every type family renders the same JSON value as to_jsonb(row), including edge values', async () => {
    const scope = `k-${randomUUID()}`;
    await insert(scope, [
      {}, // every column NULL
      {
        t: 'quote " backslash \\ newline \n tab \t nul-free \u0001 ü 😀 <&> \u2028',
        vc: 'v',
        bc: 'ab',
        nm: 'name',
        i2: -32768,
        i4: 2147483647,
        i8: '9223372036854775807',
        num: '123456789012345678901234567890.000100',
        f4: 1.5,
        f8: 1e100,
        b: true,
        d: '2024-02-29',
        ts: '2024-01-02 03:04:05.678901',
        tstz: '2024-01-02 03:04:05.5+02',
        ti: '12:34:56',
        iv: '1 day 02:03:04',
        js: '{"b": 1, "a": [1, 2], "b": 2}',
        jb: '{"z": {"y": null}, "a": "x"}',
        ia: [1, null, 3],
        ta: ['a', 'b"c', null],
        mood: 'meh',
        st: 'short',
        bin: Buffer.from([0, 1, 2, 253, 254, 255]),
        u2: randomUUID(),
        x9: 'mc',
        longer_column_name_here: '',
      },
      {
        num: 'NaN',
        f8: 'NaN',
        f4: '-Infinity',
        b: false,
        d: 'infinity',
        tstz: '-infinity',
        i8: '-1',
        bin: Buffer.alloc(0),
      },
      { num: '-0.0000001', f8: -0.1, f4: 3.4e38, t: '', js: '[]', jb: '[]', ia: [], ta: [] },
    ]);
    const rendered = await render(scope);
    expect(rendered).toHaveLength(4);
    for (const [ref, ours] of rendered) expect(JSON.parse(ours)).toEqual(JSON.parse(ref));
    // keys come in jsonb's order, so only whitespace separates the two texts
    const [ref, ours] = rendered[1]!;
    expect(Object.keys(JSON.parse(ours))).toEqual(Object.keys(JSON.parse(ref)));
  });

  test('generated text, numbers and timestamps render the same JSON value (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            t: fc.option(
              fc.string({ unit: 'binary' }).map((s) => s.replaceAll('\u0000', '')),
              { nil: null },
            ),
            i8: fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String), { nil: null }),
            num: fc.option(fc.double({ noNaN: true, noDefaultInfinity: true }).map(String), { nil: null }),
            f8: fc.option(fc.double({ noDefaultInfinity: true, noNaN: true }), { nil: null }),
            tstz: fc.option(
              fc
                .date({
                  min: new Date('0001-01-01T00:00:00Z'),
                  max: new Date('9999-12-31T23:59:59Z'),
                  noInvalidDate: true,
                })
                .map((d) => d.toISOString()),
              { nil: null },
            ),
          }),
          { minLength: 1, maxLength: 8 },
        ),
        async (rows) => {
          const scope = `p-${randomUUID()}`;
          await insert(scope, rows);
          for (const [ref, ours] of await render(scope)) expect(JSON.parse(ours)).toEqual(JSON.parse(ref));
        },
      ),
      { numRuns: 25 },
    );
  });

  test('a column added after bootstrap is in the next snapshot', async () => {
    const d = new Device(fx.app, `a-${randomUUID()}`);
    await d.connect(false);
    await fx.service.scopeManager().execWrite(d.userId, { writerId: 'seed' }, async (tx) => {
      await tx.query(`INSERT INTO business.kinds (id, t) VALUES (gen_random_uuid(), 'before')`);
    });
    await fx.cluster.exec(`ALTER TABLE business.kinds ADD COLUMN added_later INTEGER NOT NULL DEFAULT 7`);
    try {
      const sid = (await d.json('POST', '/sync/snapshot-sessions')).body['snapshot_id'] as string;
      const page = await d.json<{ rows: Array<{ payload: Record<string, unknown> }> }>(
        'GET',
        `/sync/snapshot-sessions/${sid}?after_row_ordinal=0&max_rows=10`,
      );
      expect(page.status).toBe(200);
      expect(page.body.rows).toHaveLength(1);
      expect(page.body.rows[0]!.payload).toMatchObject({ t: 'before', added_later: 7 });
    } finally {
      await fx.cluster.exec('ALTER TABLE business.kinds DROP COLUMN added_later');
    }
  });
});
