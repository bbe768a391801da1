import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { METADATA_DDL } from '../../../src/client/internal/local-schema.js';
import { stagedSource } from '../../../src/client/internal/local-store.js';
import { keyJsonFromParams, loadTableModels } from '../../../src/client/internal/table-model.js';
import { TableOps } from '../../../src/client/internal/table-ops.js';

function setup() {
  const db = new Database(':memory:');
  db.pragma('foreign_keys = OFF'); // the parent rows are not part of this test
  db.exec(METADATA_DDL);
  db.exec(`CREATE TABLE parents (id BLOB PRIMARY KEY NOT NULL, name TEXT);
    CREATE TABLE kids (id BLOB PRIMARY KEY NOT NULL, parent_id BLOB REFERENCES parents(id), flag BOOLEAN, n INTEGER, r REAL, note TEXT)`);
  const models = loadTableModels(db, [
    { table: 'parents', syncKeyColumns: ['id'] },
    { table: 'kids', syncKeyColumns: ['id'] },
  ]);
  const kids = models.find((m) => m.table === 'kids');
  if (!kids) throw new Error('no model');
  const ops = new TableOps(kids, 'business');
  const stage = (ordinal: number, id: string, payload: unknown) =>
    db
      .prepare(
        `INSERT INTO _sync_snapshot_stage(snapshot_id, row_ordinal, schema_name, table_name, key_json, row_version, payload)
         VALUES ('s', ?, 'business', 'kids', ${keyJsonFromParams(kids)}, 7, ?)`,
      )
      .run(ordinal, id.replaceAll('-', ''), JSON.stringify(payload));
  return { db, ops, stage };
}

/** Runs a generator that never waits (the test's database is on this thread) to its end. */
function drain<T>(it: Generator<unknown, T, unknown>): T {
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

const ID = '0b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
const PID = '1b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';

describe('set-based snapshot apply', () => {
  it('converts UUIDs, booleans and plain values inside SQLite, with row state', () => {
    const { db, ops, stage } = setup();
    expect(ops.setBased).toBe(true);
    stage(1, ID, { id: ID, parent_id: PID, flag: true, n: 42, r: 2.5, note: 'a<b>' });
    stage(2, PID, { id: PID, parent_id: null, flag: false, n: null, r: null, note: null });
    expect(drain(ops.applySet(db, stagedSource('s', 0, 1, 'kids')))).toBe(1); // one slice of ordinals: (0, 1]
    expect(drain(ops.applySet(db, stagedSource('s', 1, 1000, 'kids')))).toBe(1);
    const rows = db
      .prepare(`SELECT hex(id) id, hex(parent_id) p, flag, n, r, note FROM kids ORDER BY n DESC`)
      .all();
    expect(rows).toEqual([
      {
        id: ID.replaceAll('-', '').toUpperCase(),
        p: PID.replaceAll('-', '').toUpperCase(),
        flag: 1,
        n: 42,
        r: 2.5,
        note: 'a<b>',
      },
      { id: PID.replaceAll('-', '').toUpperCase(), p: '', flag: 0, n: null, r: null, note: null },
    ]);
    expect(
      db.prepare(`SELECT key_json, row_version, deleted FROM _sync_row_state ORDER BY key_json`).all(),
    ).toEqual([
      { key_json: `{"id":"${ID.replaceAll('-', '')}"}`, row_version: 7, deleted: 0 },
      { key_json: `{"id":"${PID.replaceAll('-', '')}"}`, row_version: 7, deleted: 0 },
    ]);
  });

  it('fails closed on a missing column or a non-canonical UUID, applying nothing', () => {
    for (const payload of [
      { id: ID, parent_id: null, flag: true, n: 1, r: 1 },
      { id: ID, parent_id: PID.toUpperCase(), flag: true, n: 1, r: 1, note: '' },
      { id: ID, parent_id: 'not-a-uuid-at-all-but-36-chars-long!', flag: true, n: 1, r: 1, note: '' },
    ]) {
      const { db, ops, stage } = setup();
      stage(1, ID, payload);
      expect(() => drain(ops.applySet(db, stagedSource('s', 0, 1000, 'kids')))).toThrow(
        expect.objectContaining({ code: 'OVERSYNC_CLIENT_CODEC' }),
      );
      expect(db.prepare(`SELECT COUNT(*) FROM kids`).pluck().get()).toBe(0);
    }
  });

  it('applies a page of a stage-free hydrate from its JSON the same way, and fails on a bad row', () => {
    const { db, ops } = setup();
    const hex = (u: string) => u.replaceAll('-', '');
    const page: Array<[string[], number, Record<string, unknown>]> = [
      [[hex(ID)], 7, { id: ID, parent_id: PID, flag: true, n: 42, r: 2.5, note: 'a<b>' }],
      [[hex(PID)], 8, { id: PID, parent_id: '', flag: false, n: null, r: null, note: null }],
    ];
    expect(drain(ops.applySet(db, ops.pageSource(page)))).toBe(2);
    expect(db.prepare(`SELECT hex(id) id, flag, n, note FROM kids ORDER BY n DESC`).all()).toEqual([
      { id: hex(ID).toUpperCase(), flag: 1, n: 42, note: 'a<b>' },
      { id: hex(PID).toUpperCase(), flag: 0, n: null, note: null },
    ]);
    expect(
      db.prepare(`SELECT key_json, row_version, deleted FROM _sync_row_state ORDER BY key_json`).all(),
    ).toEqual([
      { key_json: `{"id":"${hex(ID)}"}`, row_version: 7, deleted: 0 },
      { key_json: `{"id":"${hex(PID)}"}`, row_version: 8, deleted: 0 },
    ]);
    expect(db.prepare(`SELECT hex(parent_id) p FROM kids ORDER BY n DESC`).pluck().all()).toEqual([
      hex(PID).toUpperCase(),
      '',
    ]);
    // each row the codec refuses, checked before anything reaches SQLite: the same codec error
    // the stage's apply gives (its rows are checked in SQL)
    const other = '2b0e4a5c-1c2d-4e5f-8a9b-0c1d2e3f4a5b';
    const row = { id: other, parent_id: PID, flag: true, n: 1, r: 1, note: '' };
    const { note: _missing, ...noNote } = row;
    for (const payload of [
      { ...row, parent_id: PID.toUpperCase() },
      { ...row, parent_id: 42 },
      { ...row, parent_id: true },
      { ...row, parent_id: `${PID}0` },
      noNote,
    ]) {
      expect(() => drain(ops.applySet(db, ops.pageSource([[[hex(other)], 9, payload]])))).toThrow(
        expect.objectContaining({
          code: 'OVERSYNC_CLIENT_CODEC',
          message: 'snapshot rows for kids do not fit its columns',
          details: { table: 'kids', rows: 1 },
        }),
      );
    }
    expect(db.prepare(`SELECT COUNT(*) FROM kids`).pluck().get()).toBe(2);
    // a null value is a value (only a missing column is refused), in both sources
    expect(drain(ops.applySet(db, ops.pageSource([[[hex(other)], 9, { ...row, note: null }]])))).toBe(1);
  });

  it('a page and the stage give the same rows and row state for the same payloads', () => {
    const payloads = [
      { id: ID, parent_id: PID, flag: true, n: 42, r: 2.5, note: 'a "q" \\ <b>' },
      { id: PID, parent_id: null, flag: false, n: -1, r: 1e21, note: { nested: [1, 'x'] } },
    ];
    const fromStage = setup();
    for (const [i, p] of payloads.entries()) fromStage.stage(i + 1, p.id, p);
    drain(fromStage.ops.applySet(fromStage.db, stagedSource('s', 0, 1000, 'kids')));
    const fromPage = setup();
    drain(
      fromPage.ops.applySet(
        fromPage.db,
        fromPage.ops.pageSource(payloads.map((p) => [[p.id.replaceAll('-', '')], 7, p])),
      ),
    );
    const dump = (db: Database.Database) => ({
      kids: db
        .prepare(
          `SELECT hex(id) id, hex(parent_id) p, flag, n, r, note, typeof(note) t FROM kids ORDER BY id`,
        )
        .all(),
      state: db.prepare(`SELECT key_json, row_version, deleted FROM _sync_row_state ORDER BY key_json`).all(),
    });
    expect(dump(fromPage.db)).toEqual(dump(fromStage.db));
  });
});
