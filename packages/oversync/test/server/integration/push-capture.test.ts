/**
 * How a push commit captures its effects: INSERTs into plain tables with only the sync triggers are
 * recorded from the statement's RETURNING (not staged by the capture trigger), everything else
 * through the capture stage. Both must commit byte-identical rows, in uploaded order, and the same
 * bundle_hash a client recomputes from the committed rows.
 */
import { computeBundleHash } from '@x/oversync/server';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  BUSINESS_SCHEMA_SQL,
  BUSINESS_TABLES,
  createFixture,
  type Device,
  deleteRow,
  emptyScopeDevice,
  type Fixture,
  randomUUID,
  userRow,
} from '../fixture.js';

// Twin tables: `*_staged` has a user trigger (a no-op), which keeps its INSERTs on the stage path.
const twin = (name: string, cols: string) => `
CREATE TABLE business.${name} (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, ${cols}, PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE business.${name}_staged (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, ${cols}, PRIMARY KEY (_sync_scope_id, id));
CREATE TRIGGER ${name}_staged_noop BEFORE INSERT ON business.${name}_staged FOR EACH ROW EXECUTE FUNCTION business.noop();`;
const SCHEMA = `${BUSINESS_SCHEMA_SQL}
CREATE FUNCTION business.noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
${twin('notes', 'body TEXT, tag VARCHAR(40), code CHAR(3), n INTEGER, small SMALLINT, flag BOOLEAN, day DATE, at TIMESTAMPTZ DEFAULT now(), local_at TIMESTAMP')}
${twin('mixed', 'big BIGINT, f DOUBLE PRECISION, num NUMERIC, bin BYTEA, doc JSONB, plain JSON, label TEXT')}
CREATE TABLE business.parts (_sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY (_sync_scope_id, id)) PARTITION BY HASH (_sync_scope_id);
CREATE TABLE business.parts_0 PARTITION OF business.parts FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE business.parts_1 PARTITION OF business.parts FOR VALUES WITH (MODULUS 2, REMAINDER 1);
`;
const EXTRA_TABLES = ['notes', 'notes_staged', 'mixed', 'mixed_staged', 'parts'].map((table) => ({
  schema: 'business',
  table,
  syncKeyColumns: ['id'],
}));

let fx: Fixture;
const statements: string[] = [];
beforeAll(async () => {
  fx = await createFixture({
    schemaSql: SCHEMA,
    service: {
      registeredTables: [...BUSINESS_TABLES, ...EXTRA_TABLES],
      limits: { retainedBundlesPerUser: 2, retentionPruneBatchSize: 10 },
    },
  });
  // Record the SQL of every service transaction (to see which path an INSERT took).
  const cluster = fx.cluster as unknown as {
    runTx: (fn: (tx: unknown) => Promise<unknown>, opts?: unknown) => Promise<unknown>;
  };
  const runTx = cluster.runTx.bind(fx.cluster);
  cluster.runTx = (fn, opts) =>
    runTx(async (tx) => {
      const t = tx as { query: (sql: string, ...rest: unknown[]) => Promise<unknown> };
      return fn({
        ...t,
        query: (sql: string, ...rest: unknown[]) => {
          statements.push(sql);
          return t.query(sql, ...rest);
        },
      });
    }, opts);
});
afterAll(async () => {
  await fx?.close();
});

const device = () => emptyScopeDevice(fx.app);
const insert = (table: string, id: string, payload: Record<string, unknown>) => ({
  schema: 'business',
  table,
  key: { id },
  op: 'INSERT',
  base_row_version: 0,
  payload: { id, ...payload },
});
interface CommittedRow {
  table: string;
  op: string;
  key: { id: string };
  payload?: unknown;
}
async function committed(d: Device, seq: number) {
  const r = await d.json<{ rows: CommittedRow[]; bundle_hash: string }>(
    'GET',
    `/sync/committed-bundles/${seq}/rows?max_rows=5000`,
  );
  expect(r.status).toBe(200);
  // What a client checks: the hash of the committed rows equals the commit's bundle_hash.
  expect(computeBundleHash(r.body.rows as never).hex).toBe(r.body.bundle_hash);
  return r.body.rows;
}
/** payload_wire of every committed row of a bundle, by `table:id`. */
async function storedPayloads(userId: string, seq: number) {
  const r = await fx.cluster.query<{ t: string; id: string; p: string | null }>(
    `SELECT c.table_name AS t, encode(r.key_bytes, 'hex') AS id, r.payload_wire::text AS p
       FROM sync.bundle_rows r JOIN sync.table_catalog c USING (table_id) JOIN sync.user_state u USING (user_pk)
      WHERE u.user_id = $1 AND r.bundle_seq = $2`,
    [userId, seq],
  );
  return new Map(r.rows.map((x) => [`${x.t}:${x.id}`, x.p]));
}
const hex = (id: string) => id.replaceAll('-', '');

describe('push capture', () => {
  test('INSERTs into trigger-free tables are captured from RETURNING, into others through the stage', async () => {
    const d = await device();
    statements.length = 0;
    const a = randomUUID();
    const b = randomUUID();
    const r = await d.push([insert('notes', a, { body: 'x' }), insert('notes_staged', b, { body: 'x' })]);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const only = await d.push([insert('notes', randomUUID(), { body: 'y' })]);
    expect(only.status).toBe(200);
    // a push of fresh INSERTs into such tables only writes bundle rows from the INSERT itself
    expect(statements.filter((s) => /^WITH ins AS \(\s*INSERT INTO "business"."notes"/.test(s))).toHaveLength(
      1,
    );
    const inserts = statements.filter((s) => s.startsWith('INSERT INTO "business"'));
    expect(inserts).toHaveLength(2);
    expect(inserts.find((s) => s.includes('"notes" AS'))).toContain('RETURNING');
    expect(inserts.find((s) => s.includes('"notes_staged" AS'))).not.toContain('RETURNING');
    const rows = await committed(d, r.body['bundle_seq'] as number);
    expect(rows.map((x) => [x.table, x.key.id])).toEqual([
      ['notes', a],
      ['notes_staged', b],
    ]);
  });

  test('property: both paths commit byte-identical payloads and a hash the client reproduces', async () => {
    const text = fc.string({ unit: 'binary', maxLength: 12 }).map((s) => s.replaceAll('\u0000', ''));
    const tricky = fc.constantFrom('<a&b>', '\u2028\u2029', '"\\/\b\f\n\r\t\u0001\u001f', 'é 😀 \uFFFD', '');
    const note = fc.record(
      {
        body: fc.option(fc.oneof(text, tricky), { nil: null }),
        tag: fc.oneof(
          text.map((s) => s.slice(0, 10)),
          tricky,
        ),
        code: fc.constantFrom('ab', 'abc', null),
        n: fc.option(fc.integer({ min: -2147483648, max: 2147483647 }), { nil: null }),
        small: fc.integer({ min: -32768, max: 32767 }),
        flag: fc.option(fc.boolean(), { nil: null }),
        day: fc.constantFrom('2026-03-24', '1999-12-31', null),
        at: fc.constantFrom('2026-03-24T10:42:11-08:00', '2026-03-24T10:42:11.123456Z', null),
        local_at: fc.constantFrom('2026-03-24T10:42:11.5', null),
      },
      { requiredKeys: ['body', 'at'] }, // `at` given: its default now() differs between pushes
    );
    const mixed = fc.record(
      {
        big: fc.option(fc.oneof(fc.integer(), fc.constant(2 ** 53 + 2)), { nil: null }),
        f: fc.option(fc.oneof(fc.integer(), fc.constantFrom(0.1, -2.5, 1e-7, 1e21, 1.7976931348623157e308)), {
          nil: null,
        }),
        num: fc.option(fc.constantFrom(1.5, 0.1, 1.2345678901234567e19, -0), { nil: null }),
        bin: fc.option(
          fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b).toString('base64')),
          {
            nil: null,
          },
        ),
        doc: fc.option(fc.dictionary(fc.constantFrom('b', 'a', '<'), fc.oneof(fc.integer(), text)), {
          nil: null,
        }),
        plain: fc.option(fc.constantFrom({ z: 1, a: [2, 'x'] }, 'str', 1.25), { nil: null }),
        label: fc.oneof(text, tricky),
      },
      { requiredKeys: [] },
    );
    const d = await device();
    await fc.assert(
      fc.asyncProperty(
        fc.array(note, { minLength: 1, maxLength: 5 }),
        fc.array(mixed, { minLength: 1, maxLength: 5 }),
        async (notes, mixes) => {
          // each bundle is read right after its push: only 2 bundles per user are retained here
          const pushed = async (rows: unknown[]) => {
            const p = await d.push(rows, { chunkSize: 3 });
            expect(p.status, JSON.stringify(p.body)).toBe(200);
            const seq = p.body['bundle_seq'] as number;
            await committed(d, seq);
            return storedPayloads(d.userId, seq);
          };
          // 1: notes only, all fresh INSERTs into a trigger-free table: the direct-bundle path
          const a = notes.map(() => randomUUID());
          const s1 = await pushed(a.map((id, i) => insert('notes', id, notes[i]!)));
          // 2: the same rows into the twin with a user trigger: the capture stage
          const s2 = await pushed(a.map((id, i) => insert('notes_staged', id, notes[i]!)));
          // 3: a mix: direct events (notes, mixed) merged with staged ones (mixed_staged)
          const b = notes.map(() => randomUUID());
          const c = mixes.map(() => randomUUID());
          const rows = [
            ...b.map((id, i) => insert('notes', id, notes[i]!)),
            ...c.flatMap((id, i) => [insert('mixed', id, mixes[i]!), insert('mixed_staged', id, mixes[i]!)]),
          ];
          const s3 = await pushed(rows);
          expect([s1.size, s2.size, s3.size]).toEqual([a.length, a.length, rows.length]);
          a.forEach((id, i) => {
            const direct = s1.get(`notes:${hex(id)}`);
            expect(direct).toBe(s2.get(`notes_staged:${hex(id)}`));
            expect(s3.get(`notes:${hex(b[i]!)}`)).toBe(direct!.replace(id, b[i]!));
          });
          for (const id of c) expect(s3.get(`mixed:${hex(id)}`)).toBe(s3.get(`mixed_staged:${hex(id)}`));
        },
      ),
      { numRuns: 12 },
    );
  });

  test('direct INSERTs keep their place among staged UPDATEs, DELETEs and cascades', async () => {
    const d = await device();
    const [u1, u2, parent, child] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const cat = (id: string, parentId: string | null) => ({
      schema: 'business',
      table: 'categories',
      key: { id },
      op: 'INSERT',
      base_row_version: 0,
      payload: { id, name: 'c', parent_id: parentId },
    });
    const first = await d.push([
      userRow(u1, 'one'),
      userRow(u2, 'two'),
      cat(parent, null),
      cat(child, parent),
    ]);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const v = first.body['bundle_seq'] as number;

    const [n1, n2, n3] = [randomUUID(), randomUUID(), randomUUID()];
    const r = await d.push(
      [
        { ...userRow(u1, 'one-b', v), op: 'UPDATE' },
        insert('notes', n1, { body: 'a' }),
        insert('notes', n2, { body: 'b' }),
        deleteRow('categories', parent, v), // cascades to the child
        insert('notes', n3, { body: 'c' }),
        deleteRow('users', u2, v),
        insert('parts', n1, { name: 'partitioned' }),
      ],
      { chunkSize: 2 },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const rows = await committed(d, r.body['bundle_seq'] as number);
    const at = (table: string, id: string) => rows.findIndex((x) => x.table === table && x.key.id === id);
    const order = [
      at('users', u1),
      at('notes', n1),
      at('notes', n2),
      at('categories', parent),
      at('notes', n3),
      at('users', u2),
      at('parts', n1),
    ];
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((x, y) => x - y)).toEqual(order);
    // the cascaded child delete comes with its parent's DELETE, before the next uploaded row
    expect(at('categories', child)).toBeGreaterThan(at('notes', n2));
    expect(at('categories', child)).toBeLessThan(at('notes', n3));
    expect(rows).toHaveLength(8);

    // a second push over the same keys: UPDATE of a direct INSERT, re-INSERT over a tombstone
    const w = r.body['bundle_seq'] as number;
    const again = await d.push([
      { ...insert('notes', n1, { body: 'a2' }), op: 'UPDATE', base_row_version: w },
      { ...userRow(u2, 'two-again', w) },
      { ...insert('parts', n1, { name: 'p2' }), op: 'UPDATE', base_row_version: w },
    ]);
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    const rows2 = await committed(d, again.body['bundle_seq'] as number);
    expect(rows2.map((x) => [x.op, x.table])).toEqual([
      ['UPDATE', 'notes'],
      ['INSERT', 'users'],
      ['UPDATE', 'parts'],
    ]);
    const state = await fx.cluster.query<{ deleted: boolean; bundle_seq: string }>(
      `SELECT s.deleted, s.bundle_seq::text FROM sync.row_state s JOIN sync.user_state u USING (user_pk)
        WHERE u.user_id = $1 AND s.key_bytes = decode($2, 'hex') AND s.table_id =
              (SELECT table_id FROM sync.table_catalog WHERE table_name = 'users')`,
      [d.userId, hex(u2)],
    );
    expect(state.rows).toEqual([{ deleted: false, bundle_seq: String(again.body['bundle_seq']) }]);
  });

  test('pruned bundles and deleted users take bundle_rows and row_state along (no FKs on them)', async () => {
    const d = await device();
    for (let i = 0; i < 4; i++) {
      const r = await d.push([insert('notes', randomUUID(), { body: `n${i}` })]);
      expect(r.status).toBe(200);
    }
    const counts = async () =>
      (
        await fx.cluster.query<{ bundles: string; rows: string; states: string }>(
          `SELECT (SELECT count(*) FROM sync.bundle_log b JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1)::text AS bundles,
                  (SELECT count(*) FROM sync.bundle_rows b JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1)::text AS rows,
                  (SELECT count(*) FROM sync.row_state s JOIN sync.user_state u USING (user_pk) WHERE u.user_id = $1)::text AS states`,
          [d.userId],
        )
      ).rows[0]!;
    // retainedBundlesPerUser = 2: bundles 1 and 2 are pruned with their rows, row_state stays
    expect(await counts()).toEqual({ bundles: '2', rows: '2', states: '4' });
    const orphans = async () =>
      (
        await fx.cluster.query<{ n: string }>(
          `SELECT ((SELECT count(*) FROM sync.bundle_rows r WHERE NOT EXISTS
                     (SELECT 1 FROM sync.bundle_log b WHERE b.user_pk = r.user_pk AND b.bundle_seq = r.bundle_seq))
                 + (SELECT count(*) FROM sync.row_state s WHERE NOT EXISTS
                     (SELECT 1 FROM sync.user_state u WHERE u.user_pk = s.user_pk)))::text AS n`,
        )
      ).rows[0]!.n;
    expect(await orphans()).toBe('0');
    await fx.cluster.runTx(async (tx) => {
      await tx.query('DELETE FROM sync.user_state WHERE user_id = $1', [d.userId]);
    });
    expect(await orphans()).toBe('0');
  });
});
