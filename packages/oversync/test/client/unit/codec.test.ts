import Database from 'better-sqlite3';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeBase64Strict,
  hexToUuid,
  localKeyToWire,
  localPayloadToWire,
  replayEquivalent,
  uuidToHex,
  wireKeyToLocal,
  wirePayloadToLocal,
} from '../../../src/client/internal/codec.js';
import { loadTableModels } from '../../../src/client/internal/table-model.js';

function model() {
  const db = new Database(':memory:');
  db.exec(`CREATE TABLE parent (id BLOB PRIMARY KEY);
    CREATE TABLE typed (
      org TEXT NOT NULL, id BLOB NOT NULL, parent_id BLOB REFERENCES parent(id), data BLOB, flag BOOLEAN,
      doc JSON, n INTEGER, r REAL, at TEXT, PRIMARY KEY (org, id))`);
  const models = loadTableModels(db, [
    { table: 'parent', syncKeyColumns: ['id'] },
    { table: 'typed', syncKeyColumns: ['org', 'id'] },
  ]);
  db.close();
  const typed = models.find((m) => m.table === 'typed');
  if (!typed) throw new Error('no model');
  expect(models.map((m) => m.table)).toEqual(['parent', 'typed']);
  return typed;
}

const hex16 = fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b).toString('hex'));

describe('client codecs', () => {
  const m = model();

  it('UUID blobs round-trip between 32-hex local form and dashed wire form', () => {
    fc.assert(
      fc.property(hex16, (h) => {
        const u = hexToUuid(h);
        expect(u).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        expect(uuidToHex(u)).toBe(h);
      }),
    );
    expect(() => hexToUuid('abcd')).toThrow(expect.objectContaining({ code: 'OVERSYNC_CLIENT_CODEC' }));
    expect(() => uuidToHex('0B0E4A5C-1C2D-4E5F-8A9B-0C1D2E3F4A5B')).toThrow();
  });

  it('accepts only strict standard padded base64 for bytea', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        const s = Buffer.from(b).toString('base64');
        expect(decodeBase64Strict(s).equals(Buffer.from(b))).toBe(true);
      }),
    );
    expect(() => decodeBase64Strict('AAE')).toThrow();
    expect(() => decodeBase64Strict('AA-_')).toThrow();
  });

  it('composite keys with text and UUID parts map both ways', () => {
    fc.assert(
      fc.property(fc.string(), hex16, (org, h) => {
        const wire = localKeyToWire(m, { org, id: h });
        expect(wire).toEqual({ org, id: hexToUuid(h) });
        const back = wireKeyToLocal(m, wire);
        expect(back.text).toEqual([org, h]);
        expect(Buffer.isBuffer(back.bind[1])).toBe(true);
      }),
    );
  });

  it('typed payloads survive local → wire → local', () => {
    const local = fc.record({
      org: fc.string(),
      id: hex16,
      parent_id: fc.option(hex16, { nil: null }),
      data: fc.option(
        fc.uint8Array({ maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')),
        { nil: null },
      ),
      flag: fc.option(fc.constantFrom(0, 1), { nil: null }),
      doc: fc.option(
        // JSON `null` and SQL NULL share one wire form (as in PostgreSQL's to_jsonb of a row).
        fc
          .jsonValue()
          .filter((v) => v !== null)
          .map((v) => JSON.stringify(v)),
        { nil: null },
      ),
      n: fc.option(fc.integer(), { nil: null }),
      r: fc.option(fc.double({ noNaN: true, noDefaultInfinity: true }), { nil: null }),
      at: fc.option(fc.constant('2026-03-24T10:42:11Z'), { nil: null }),
    });
    fc.assert(
      fc.property(local, (p) => {
        const wire = localPayloadToWire(m, p);
        if (p.flag !== null) expect(typeof wire.flag).toBe('boolean');
        if (p.parent_id !== null) expect(wire.parent_id).toBe(hexToUuid(p.parent_id));
        if (p.data !== null) expect(wire.data).toBe(Buffer.from(p.data, 'hex').toString('base64'));
        const back = wirePayloadToLocal(m, JSON.parse(JSON.stringify(wire)));
        expect(back).toEqual({
          ...p,
          doc: p.doc === null ? null : JSON.stringify(JSON.parse(p.doc)),
          r: p.r === null ? null : Object.is(p.r, -0) ? 0 : p.r,
        });
      }),
    );
  });

  it('rejects a wire payload that lacks a local column', () => {
    expect(() => wirePayloadToLocal(m, { org: 'a' })).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_CLIENT_CODEC' }),
    );
  });

  it('replay equivalence compares RFC 3339 instants, not spellings', () => {
    expect(replayEquivalent({ at: '2026-03-24T18:42:11Z' }, { at: '2026-03-24T18:42:11+00:00' })).toBe(true);
    expect(replayEquivalent({ at: '2026-03-24T10:42:11-08:00' }, { at: '2026-03-24T18:42:11.000Z' })).toBe(
      true,
    );
    expect(replayEquivalent({ at: '2026-03-24 18:42:11' }, { at: '2026-03-24T18:42:11Z' })).toBe(false);
    expect(replayEquivalent({ at: '2026-03-24T18:42:11.000001Z' }, { at: '2026-03-24T18:42:11Z' })).toBe(
      false,
    );
    expect(replayEquivalent({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] })).toBe(true);
  });
});
