/**
 * Payloads read from PostgreSQL are already JSON text (canonical for bundles). Hot paths carry them
 * as RawJson so the HTTP layer can embed the text as-is instead of parsing and re-encoding it.
 */
import { goJsonNumber, goJsonString } from '../shared/canonical-json.js';

/**
 * JSON text carried as it is: {@link wireJson} embeds it verbatim, `JSON.stringify` parses it back.
 * Pull, committed-bundle rows and snapshot chunks return row payloads as RawJson when asked for
 * `rawPayloads`.
 *
 * @example
 * ```ts
 * import { RawJson } from '@x/oversync/server';
 *
 * const payload = new RawJson('{"id":"n1","title":"Groceries"}');
 * console.log(payload.text); // {"id":"n1","title":"Groceries"}
 * console.log(JSON.stringify({ payload })); // {"payload":{"id":"n1","title":"Groceries"}}
 * ```
 */
export class RawJson {
  constructor(readonly text: string) {}
  /** For JSON.stringify users: the parsed value. */
  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}

function write(v: unknown, out: string[]): void {
  if (v === null || v === undefined) {
    out.push('null');
    return;
  }
  switch (typeof v) {
    case 'string':
      out.push(goJsonString(v));
      return;
    case 'number':
      out.push(Number.isFinite(v) ? goJsonNumber(v) : 'null');
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'object':
      break;
    default:
      out.push('null');
      return;
  }
  if (v instanceof RawJson) {
    out.push(v.text);
    return;
  }
  if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(',');
      write(v[i], out);
    }
    out.push(']');
    return;
  }
  out.push('{');
  let first = true;
  for (const k of Object.keys(v)) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined) continue;
    if (!first) out.push(',');
    first = false;
    out.push(goJsonString(k), ':');
    write(x, out);
  }
  out.push('}');
}

/**
 * JSON text of a response as Go's `json.Encoder` writes it (field order kept, HTML-safe escapes,
 * trailing newline), with RawJson values embedded verbatim.
 *
 * @example
 * ```ts
 * import { RawJson, wireJson } from '@x/oversync/server';
 *
 * // a payload read from PostgreSQL goes out as it is; the rest is encoded as Go encodes it
 * const body = wireJson({ rows: [{ id: 'n1', payload: new RawJson('{"title":"a<b"}') }], note: 'a<b' });
 * process.stdout.write(body); // {"rows":[{"id":"n1","payload":{"title":"a<b"}}],"note":"a\u003cb"}
 * ```
 */
export function wireJson(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  out.push('\n');
  return out.join('');
}

/** Replaces RawJson payloads of rows with parsed values (for programmatic callers). */
export function parsePayloads<T extends { payload?: unknown }>(rows: T[]): T[] {
  for (const r of rows) if (r.payload instanceof RawJson) r.payload = JSON.parse(r.payload.text);
  return rows;
}
