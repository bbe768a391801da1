/**
 * The response encoder (raw-json.ts): Go's `json.Encoder` text with RawJson embedded verbatim,
 * written in one go (`wireJson`) or in slices with turns of the event loop between them
 * (`wireJsonSliced`, what the HTTP routes send): both give the same text for any value.
 */
import { RawJson, wireJson } from '@x/oversync/server';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { wireJsonSliced } from '../../../src/server/raw-json.js';

/** A JSON value where some objects and arrays are carried as RawJson text, and some fields are undefined. */
const wireValue = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom(null, true, false, undefined),
    fc.string({ unit: 'grapheme' }),
    fc.string({ unit: 'binary' }),
    fc.integer(),
    // -0 aside: the encoder writes it as Go does ("-0"), JSON.stringify as "0" (tested below)
    fc.double().map((d) => (Object.is(d, -0) ? 0 : d)),
    fc.array(tie('value'), { maxLength: 8 }),
    fc.dictionary(fc.string({ unit: 'grapheme', maxLength: 6 }), tie('value'), { maxKeys: 6 }),
    fc.jsonValue({ maxDepth: 2 }).map((v) => new RawJson(JSON.stringify(v))),
  ),
})).value;

/** What JSON.parse of the encoded text must give: RawJson parsed, undefined as JSON.stringify treats it. */
const expected = (v: unknown): unknown => JSON.parse(JSON.stringify(v) ?? 'null');

function rawTexts(v: unknown, out: string[] = []): string[] {
  if (v instanceof RawJson) out.push(v.text);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) rawTexts(x, out);
  return out;
}

describe('wireJson and wireJsonSliced', () => {
  test('Go escapes, field order and RawJson text verbatim', () => {
    const body = {
      rows: [
        { id: 'n1', payload: new RawJson('{"title":"a<b",  "n":1}'), skipped: undefined },
        { id: 'n2', payload: null, list: [undefined, 1.5e-7, 1e21, Number.NaN] },
      ],
      note: 'a<b>&c\u2028',
      has_more: false,
    };
    const text =
      '{"rows":[{"id":"n1","payload":{"title":"a<b",  "n":1}},{"id":"n2","payload":null,"list":[null,1.5e-7,1e+21,null]}],' +
      '"note":"a\\u003cb\\u003e\\u0026c\\u2028","has_more":false}\n';
    expect(wireJson(body)).toBe(text);
    // negative zero as Go's encoding/json writes it (JSON.stringify would write 0)
    expect(wireJson([-0, 0])).toBe('[-0,0]\n');
  });

  test('for any value: the text parses back to the value, escapes what Go escapes, and the sliced text is the same', async () => {
    await fc.assert(
      fc.asyncProperty(wireValue, async (v) => {
        const text = wireJson(v);
        expect(text.endsWith('\n')).toBe(true);
        expect(JSON.parse(text)).toEqual(expected(v));
        // Go writes <, >, & and U+2028/9 in strings as \u escapes: raw, they can only come from
        // RawJson text, embedded as it is.
        if (!rawTexts(v).some((t) => /[<>&\u2028\u2029]/.test(t))) {
          expect(text).not.toMatch(/[<>&\u2028\u2029]/);
        }
        expect(await wireJsonSliced(v, 0)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });

  test('a large page is written in many slices, the event loop turning between them', async () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => ({
      schema: 'business',
      table: 'items',
      key: { id: `k${i}` },
      op: 'INSERT',
      row_version: i,
      payload: new RawJson(`{"id":"k${i}","title":"t<${i}>"}`),
    }));
    let turns = 0;
    let stop = false;
    const tick = () => {
      if (stop) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    // A slice of 0 ms stops after every 64 elements (the clock is read that often).
    const text = await wireJsonSliced({ rows, has_more: true }, 0);
    stop = true;
    expect(text).toBe(wireJson({ rows, has_more: true }));
    expect(turns).toBeGreaterThanOrEqual(Math.floor((rows.length * 7) / 64) - 1);
  });
});
