/**
 * Payloads read from PostgreSQL are already JSON text (canonical for bundles). Hot paths carry them
 * as RawJson so the HTTP layer can embed the text as-is instead of parsing and re-encoding it.
 */
import { setImmediate as setImmediatePromise } from 'node:timers/promises';
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

/** Object keys repeat in every row of a response: their escaped form is kept (bounded). */
const KEY_TEXT = new Map<string, string>();
const KEY_TEXT_MAX = 4096;

function keyText(k: string): string {
  let t = KEY_TEXT.get(k);
  if (t === undefined) {
    t = goJsonString(k);
    if (KEY_TEXT.size < KEY_TEXT_MAX) KEY_TEXT.set(k, t);
  }
  return t;
}

/** An array or object being written: its elements (keys) and the next one. */
type Frame =
  | { readonly a: readonly unknown[]; i: number }
  | { readonly o: Record<string, unknown>; readonly keys: readonly string[]; i: number; first: boolean };

/**
 * Writes one value iteratively (an explicit stack, no recursion), so the work can stop after any
 * element and go on later: {@link wireJson} runs it to the end at once, {@link wireJsonSliced} in
 * slices that give the event loop a turn between them.
 */
class WireWriter {
  out = '';
  readonly #stack: Frame[] = [];

  constructor(value: unknown) {
    this.#value(value);
  }

  #value(v: unknown): void {
    if (v === null || v === undefined) {
      this.out += 'null';
      return;
    }
    switch (typeof v) {
      case 'string':
        this.out += goJsonString(v);
        return;
      case 'number':
        this.out += Number.isFinite(v) ? goJsonNumber(v) : 'null';
        return;
      case 'boolean':
        this.out += v ? 'true' : 'false';
        return;
      case 'object':
        break;
      default:
        this.out += 'null';
        return;
    }
    if (v instanceof RawJson) {
      this.out += v.text;
      return;
    }
    if (Array.isArray(v)) {
      this.out += '[';
      this.#stack.push({ a: v, i: 0 });
      return;
    }
    this.out += '{';
    this.#stack.push({ o: v as Record<string, unknown>, keys: Object.keys(v), i: 0, first: true });
  }

  /**
   * Writes on until the value is complete (true) or, with a deadline (`performance.now()` time),
   * until it has passed (false; call again to go on). The clock is read every 64 elements.
   */
  run(deadline?: number): boolean {
    const stack = this.#stack;
    let steps = 0;
    while (stack.length > 0) {
      const f = stack[stack.length - 1] as Frame;
      if ('a' in f) {
        if (f.i === f.a.length) {
          this.out += ']';
          stack.pop();
          continue;
        }
        if (f.i > 0) this.out += ',';
        this.#value(f.a[f.i++]);
      } else {
        let k: string | undefined;
        let x: unknown;
        while (f.i < f.keys.length) {
          k = f.keys[f.i++] as string;
          x = f.o[k];
          if (x !== undefined) break;
          k = undefined;
        }
        if (k === undefined) {
          this.out += '}';
          stack.pop();
          continue;
        }
        this.out += f.first ? `${keyText(k)}:` : `,${keyText(k)}:`;
        f.first = false;
        this.#value(x);
      }
      if (deadline !== undefined && (++steps & 63) === 0 && performance.now() >= deadline) return false;
    }
    return true;
  }
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
  const w = new WireWriter(value);
  w.run();
  return `${w.out}\n`;
}

/** How long one slice of {@link wireJsonSliced} may hold the event loop. */
export const WIRE_JSON_SLICE_MS = 5;

/**
 * {@link wireJson}, written in slices of at most about `WIRE_JSON_SLICE_MS` with a turn of the
 * event loop between them: a page of thousands of rows never holds the server's event loop for
 * the whole of its encoding (other requests, watch events and health checks go on meanwhile).
 * The same text as `wireJson`; a small value is written in its first slice, without a wait.
 */
export async function wireJsonSliced(value: unknown, sliceMs = WIRE_JSON_SLICE_MS): Promise<string> {
  const w = new WireWriter(value);
  while (!w.run(performance.now() + sliceMs)) await setImmediatePromise();
  return `${w.out}\n`;
}

/** Replaces RawJson payloads of rows with parsed values (for programmatic callers). */
export function parsePayloads<T extends { payload?: unknown }>(rows: T[]): T[] {
  for (const r of rows) if (r.payload instanceof RawJson) r.payload = JSON.parse(r.payload.text);
  return rows;
}
