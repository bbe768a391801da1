/**
 * Canonical JSON exactly as go-oversync produces it: Go's `json.Marshal` of a value decoded by
 * `json.Unmarshal` into `any` (maps, slices, float64, string, bool, nil).
 *
 * - object keys sorted by Unicode code point (Go sorts map keys by their UTF-8 bytes, which is the
 *   same order; JS's default `sort()` compares UTF-16 units and differs for astral characters);
 * - no whitespace;
 * - every number is a float64 printed as the shortest round-tripping text, fixed notation for
 *   1e-6 <= |x| < 1e21 and exponent notation otherwise (`1e+21`, `1e-7`); this is JS `String(x)`
 *   except for negative zero, which Go prints as `-0`;
 * - strings escaped as Go does with HTML escaping on: `"` `\\` `\b` `\f` `\n` `\r` `\t`, other C0
 *   controls as `\u00xx`, and `<` `>` `&` U+2028 U+2029 as `\u003c` `\u003e` `\u0026` `\u2028`
 *   `\u2029`; lone surrogates become U+FFFD (what Go's decoder does with them).
 *
 * Integers beyond 2^53 therefore lose precision exactly as they do in the reference (it parses
 * through float64 too); do not "fix" this or bundle hashes diverge.
 */

/** A JSON value as `JSON.parse` returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

const GO_HTML_ESCAPES: Record<string, string> = {
  '<': '\\u003c',
  '>': '\\u003e',
  '&': '\\u0026',
  '\u2028': '\\u2028',
  '\u2029': '\\u2029',
};
const GO_HTML_ESCAPE_RE = /[<>&\u2028\u2029]/g;
const LONE_SURROGATE_TEST_RE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE_RE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Replaces unpaired UTF-16 surrogates with U+FFFD, as Go's JSON decoder does.
 *
 * @example
 * ```ts
 * import { toWellFormed } from '@x/oversync';
 *
 * toWellFormed('a\uD800b'); // 'a\uFFFDb': the lone surrogate is replaced, as Go does
 * ```
 */
export function toWellFormed(s: string): string {
  return s.replace(LONE_SURROGATE_RE, '\uFFFD');
}

/**
 * Applies Go's HTML-safe escaping to JSON text produced by `JSON.stringify`. Safe on whole
 * documents: `<`, `>`, `&`, U+2028 and U+2029 can only occur inside string literals.
 *
 * @example
 * ```ts
 * import { goEscapeJsonText } from '@x/oversync';
 *
 * goEscapeJsonText(JSON.stringify({ html: '<b>' })); // '{"html":"\\u003cb\\u003e"}'
 * ```
 */
export function goEscapeJsonText(json: string): string {
  return json.replace(GO_HTML_ESCAPE_RE, (c) => GO_HTML_ESCAPES[c]!);
}

const NEEDS_GO_WORK_RE = /[<>&\u2028\u2029\uD800-\uDFFF]/;

/**
 * One JSON string literal, escaped as Go's encoder escapes it.
 *
 * @example
 * ```ts
 * import { goJsonString } from '@x/oversync';
 *
 * goJsonString('a & b'); // '"a \\u0026 b"'
 * ```
 */
export function goJsonString(s: string): string {
  // Fast path: most strings need nothing beyond JSON.stringify's escapes (identical to Go's).
  if (!NEEDS_GO_WORK_RE.test(s)) return JSON.stringify(s);
  return goEscapeJsonText(JSON.stringify(toWellFormed(s)));
}

/**
 * One JSON number, printed as Go prints a float64. Throws for NaN and infinities (not JSON).
 *
 * @example
 * ```ts
 * import { goJsonNumber } from '@x/oversync';
 *
 * goJsonNumber(1e21); // '1e+21'
 * goJsonNumber(-0); // '-0'
 * ```
 */
export function goJsonNumber(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError(`non-finite number ${n} has no JSON form`);
  if (n === 0) return Object.is(n, -0) ? '-0' : '0';
  return String(n);
}

function compareCodePoints(a: string, b: string): number {
  // Fast path: UTF-16 order equals code point order unless a surrogate is involved.
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const ca = a.charCodeAt(i);
    const cb = b.charCodeAt(i);
    if (ca === cb) continue;
    const sa = ca >= 0xd800 && ca <= 0xdfff;
    const sb = cb >= 0xd800 && cb <= 0xdfff;
    if (sa === sb) return ca - cb;
    // A surrogate (astral code point, >= U+10000) sorts after any BMP unit.
    return sa ? 1 : -1;
  }
  return a.length - b.length;
}

/**
 * Sorts object keys by Unicode code point, as Go sorts map keys.
 *
 * @example
 * ```ts
 * import { sortKeysByCodePoint } from '@x/oversync';
 *
 * sortKeysByCodePoint(['\u{1F600}', '\uFFFF', 'a']); // ['a', '\uFFFF', '\u{1F600}'] (UTF-16 order would put the emoji second)
 * ```
 */
export function sortKeysByCodePoint(keys: string[]): string[] {
  return keys.sort(compareCodePoints);
}

function encode(value: unknown, out: string[]): void {
  if (value === null || value === undefined) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
      out.push(goJsonNumber(value));
      return;
    case 'string':
      out.push(goJsonString(value));
      return;
    case 'object':
      break;
    default:
      throw new TypeError(`cannot encode ${typeof value} as JSON`);
  }
  if (Array.isArray(value)) {
    out.push('[');
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out.push(',');
      encode(value[i], out);
    }
    out.push(']');
    return;
  }
  let obj = value as Record<string, unknown>;
  let keys = Object.keys(obj);
  if (keys.some((k) => LONE_SURROGATE_TEST_RE.test(k))) {
    // Go decodes lone surrogates in keys to U+FFFD; keys that then coincide collapse, last wins.
    const wf: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    for (const k of keys) wf[toWellFormed(k)] = obj[k];
    obj = wf;
    keys = Object.keys(obj);
  }
  sortKeysByCodePoint(keys);
  out.push('{');
  let first = true;
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    if (!first) out.push(',');
    first = false;
    out.push(goJsonString(k), ':');
    encode(v, out);
  }
  out.push('}');
}

/**
 * Canonical JSON text of an already-parsed value (see the module comment).
 *
 * @example
 * ```ts
 * import { canonicalJson } from '@x/oversync';
 *
 * canonicalJson({ b: 1, a: [true, null, 'x'] }); // '{"a":[true,null,"x"],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  const out: string[] = [];
  encode(value, out);
  return out.join('');
}

/**
 * Parses JSON text and re-emits it canonically (Go: `json.Unmarshal` into `any`, then `json.Marshal`).
 *
 * @example
 * ```ts
 * import { canonicalizeJsonText } from '@x/oversync';
 *
 * canonicalizeJsonText('{ "b": 1.0, "a": "<" }'); // '{"a":"\\u003c","b":1}'
 * ```
 */
export function canonicalizeJsonText(text: string): string {
  return canonicalJson(JSON.parse(text) as unknown);
}
