import { createHash } from 'node:crypto';
import {
  bundleHashInput,
  canonicalizeJsonText,
  canonicalJson,
  computeBundleHash,
  goJsonNumber,
  goJsonString,
  toWellFormed,
} from '@x/oversync/server';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';

const sha256 = (s: string) => createHash('sha256').update(Buffer.from(s, 'utf8')).digest('hex');
/** Go sorts map keys by their UTF-8 bytes. */
const goKeyOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

describe('canonical JSON (Go encoding/json of a decoded value)', () => {
  test.each([
    [1e21, '1e+21'],
    [1e20, '100000000000000000000'],
    [1e-7, '1e-7'],
    [1.5e-7, '1.5e-7'],
    [0.000001, '0.000001'],
    [-0, '-0'],
    [0, '0'],
    [0.1, '0.1'],
    [2 ** 53 + 1, '9007199254740992'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [5e-324, '5e-324'],
    [-123.456, '-123.456'],
  ])('number %s prints as Go prints a float64: %s', (n, text) => {
    expect(goJsonNumber(n)).toBe(text);
  });

  test('integers beyond 2^53 lose precision exactly as through float64', () => {
    expect(canonicalizeJsonText('{"n":12345678901234567890}')).toBe('{"n":12345678901234567000}');
    expect(canonicalizeJsonText('[9007199254740993, 1.0, 1e2, -0.0]')).toBe('[9007199254740992,1,100,-0]');
  });

  test('strings use Go escapes: HTML-safe <>&, U+2028/2029, \\b \\f, other C0 as \\u00xx, lone surrogates as U+FFFD', () => {
    expect(goJsonString('a<b>&c')).toBe('"a\\u003cb\\u003e\\u0026c"');
    expect(goJsonString('\u2028\u2029')).toBe('"\\u2028\\u2029"');
    expect(goJsonString('\b\f\n\r\t\u0001\u001f"\\/\u007f')).toBe(
      '"\\b\\f\\n\\r\\t\\u0001\\u001f\\"\\\\/\u007f"',
    );
    expect(goJsonString('x\uD800y')).toBe('"x\uFFFDy"');
    expect(goJsonString('😀é')).toBe('"😀é"');
  });

  test('object keys sort by code point (astral keys after U+FFFF), nested, no whitespace', () => {
    const v = { b: 1, a: { z: [1, { y: null, x: true }], '': 'e' }, '\uFFFF': 2, '😀': 3, é: false };
    expect(canonicalJson(v)).toBe(
      '{"a":{"":"e","z":[1,{"x":true,"y":null}]},"b":1,"é":false,"\uFFFF":2,"😀":3}',
    );
  });

  test('property: output re-parses to the input, contains no raw HTML/line-separator characters, is idempotent', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const out = canonicalJson(v);
        expect(out).not.toMatch(/[<>&\u2028\u2029]/);
        expect(canonicalizeJsonText(out)).toBe(out);
        expect(JSON.parse(out)).toEqual(v);
      }),
      { numRuns: 300 },
    );
  });

  test('property: object keys are emitted in UTF-8 byte order', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ unit: 'grapheme' }), fc.integer()), (obj) => {
        const out = canonicalJson(obj);
        const keys = [...out.matchAll(/"((?:[^"\\]|\\.)*)":-?\d+/g)].map(
          (m) => JSON.parse(`"${m[1]}"`) as string,
        );
        expect(keys).toEqual(Object.keys(obj).sort(goKeyOrder));
      }),
      { numRuns: 300 },
    );
  });

  test('property: any string (lone surrogates included) round-trips as its well-formed form', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const out = goJsonString(s);
        expect(out).not.toMatch(/[<>&\u2028\u2029\u0000-\u001f]/);
        expect(JSON.parse(out)).toBe(toWellFormed(s));
      }),
      { numRuns: 500 },
    );
  });

  test('property: numbers print as Go strconv.FormatFloat(f, fmt, -1, 64) with encoding/json exponent cleanup', () => {
    const goFormat = (f: number) => {
      if (f === 0) return Object.is(f, -0) ? '-0' : '0';
      const abs = Math.abs(f);
      if (abs < 1e-6 || abs >= 1e21)
        return f
          .toExponential()
          .replace(/e([+-])(\d)$/, 'e$10$2')
          .replace(/e-0(\d)$/, 'e-$1');
      return String(f);
    };
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (f) => {
        expect(goJsonNumber(f)).toBe(goFormat(f));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('bundle_hash vectors', () => {
  test('a two-row bundle: canonical input, byte count and SHA-256', () => {
    const rows = [
      {
        schema: 'business',
        table: 'users',
        key: { id: '8c3e9927-a479-4015-a6e4-f60ec5db6509' },
        op: 'INSERT' as const,
        row_version: 7,
        payload: {
          name: 'A & <B>',
          id: '8c3e9927-a479-4015-a6e4-f60ec5db6509',
          n: 1e21,
          big: 2 ** 53 + 1,
        },
      },
      {
        schema: 'business',
        table: 'posts',
        key: { id: 'k' },
        op: 'DELETE' as const,
        row_version: 7,
        payload: { x: 1 },
      },
    ];
    const expected =
      '[{"key":{"id":"8c3e9927-a479-4015-a6e4-f60ec5db6509"},"op":"INSERT","payload":{"big":9007199254740992,' +
      '"id":"8c3e9927-a479-4015-a6e4-f60ec5db6509","n":1e+21,"name":"A \\u0026 \\u003cB\\u003e"},"row_ordinal":0,' +
      '"row_version":7,"schema":"business","table":"users"},{"key":{"id":"k"},"op":"DELETE","payload":null,' +
      '"row_ordinal":1,"row_version":7,"schema":"business","table":"posts"}]';
    expect(bundleHashInput(rows)).toBe(expected);
    const h = computeBundleHash(rows);
    expect(h.byteCount).toBe(Buffer.byteLength(expected));
    expect(h.hex).toBe(sha256(expected));
  });

  test('a fixed vector stays fixed', () => {
    const h = computeBundleHash([
      { schema: 'business', table: 'users', key: { id: 'a' }, op: 'DELETE', row_version: 3 },
    ]);
    expect(h.canonical).toBe(
      '[{"key":{"id":"a"},"op":"DELETE","payload":null,"row_ordinal":0,"row_version":3,"schema":"business","table":"users"}]',
    );
    expect(h.hex).toBe('70bec8e864da35550806ce8c7ef6ff804f45d069c63797ba6c86ebbba79cc52d');
    expect(h.byteCount).toBe(117);
  });

  test('the empty bundle hashes "[]"', () => {
    expect(computeBundleHash([]).hex).toBe(sha256('[]'));
  });

  test('property: the hash input is canonicalJson of the row objects it describes', () => {
    const name = fc.oneof(fc.constantFrom('business', 'users', 'tags'), fc.string({ unit: 'binary' }));
    const row = fc.record({
      schema: name,
      table: name,
      key: fc.oneof(
        fc.record({ id: fc.string({ unit: 'binary' }) }),
        fc.dictionary(fc.string({ unit: 'binary' }), fc.oneof(fc.string(), fc.integer()), { maxKeys: 3 }),
      ),
      op: fc.constantFrom('INSERT' as const, 'UPDATE' as const, 'DELETE' as const),
      row_version: fc.integer({ min: 0, max: 2 ** 40 }),
      payload: fc.option(fc.jsonValue(), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(row, { maxLength: 12 }), (rows) => {
        const spec = rows.map((r, i) => ({
          row_ordinal: i,
          schema: r.schema,
          table: r.table,
          key: r.key,
          op: r.op,
          row_version: r.row_version,
          payload: r.op === 'DELETE' || r.payload === undefined ? null : r.payload,
        }));
        expect(bundleHashInput(rows as Parameters<typeof bundleHashInput>[0])).toBe(canonicalJson(spec));
      }),
      { numRuns: 300 },
    );
  });
});
