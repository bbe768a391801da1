import { DbxError } from '../errors.js';
import type { IsolationLevel, NodeClass } from '../types.js';

/** The keys each per-call options object may have; any other is refused, as in the cluster options. */
export const QUERY_OPTION_KEYS: ReadonlySet<string> = new Set(['signal']);
export const STATEMENT_OPTION_KEYS: ReadonlySet<string> = new Set(['signal', 'name']);
export const READ_OPTION_KEYS: ReadonlySet<string> = new Set(['signal', 'node', 'token', 'maxLagMs']);
export const STREAM_OPTION_KEYS: ReadonlySet<string> = new Set(['signal', 'batchSize']);
export const TX_OPTION_KEYS: ReadonlySet<string> = new Set([
  'isolation',
  'readOnly',
  'deferrable',
  'signal',
  'maxAttempts',
]);
export const WAIT_FOR_PRIMARY_OPTION_KEYS: ReadonlySet<string> = new Set(['signal', 'timeoutMs']);
export const SESSION_OPTION_KEYS: ReadonlySet<string> = new Set(['token']);

export const NODE_CLASSES: readonly NodeClass[] = ['primary', 'replica', 'any'];
export const ISOLATION_LEVELS: readonly IsolationLevel[] = [
  'read committed',
  'repeatable read',
  'serializable',
];

/** DBX_INVALID_OPTIONS for the option `key` of `what` (e.g. `readQuery options`). */
export function invalidCallOption(what: string, key: string, problem: string): DbxError {
  return new DbxError('DBX_INVALID_OPTIONS', `invalid ${what}: ${key}: ${problem}`, { details: { key } });
}

/**
 * The error for a per-call options object that is not an object or has a key outside `known` (naming
 * the key and the known ones), or null when it is fine. `undefined` and `null` mean no options.
 * Cheap: one pass over the own keys.
 */
export function callOptionsError(what: string, opts: unknown, known: ReadonlySet<string>): DbxError | null {
  if (opts === undefined || opts === null) return null;
  if (typeof opts !== 'object') return invalidCallOption(what, '(root)', 'expected an object');
  for (const key of Object.keys(opts)) {
    if (!known.has(key))
      return invalidCallOption(what, key, `unknown option (known: ${[...known].join(', ')})`);
  }
  return null;
}

/** Throws what `callOptionsError` finds (for async functions, where a throw is a rejection). */
export function checkCallOptions(what: string, opts: unknown, known: ReadonlySet<string>): void {
  const e = callOptionsError(what, opts, known);
  if (e !== null) throw e;
}

function enumError(what: string, key: string, value: unknown, allowed: readonly string[]): DbxError | null {
  if (value === undefined || allowed.includes(value as string)) return null;
  return invalidCallOption(what, key, `expected one of ${allowed.map((a) => JSON.stringify(a)).join('|')}`);
}

/** `value` must be one of `allowed` (or undefined). */
export function checkEnumOption(what: string, key: string, value: unknown, allowed: readonly string[]): void {
  const e = enumError(what, key, value, allowed);
  if (e !== null) throw e;
}

/**
 * What is wrong with the options of readQuery / readQueryRow, or null: known keys only, `node` one
 * of the classes, `token` a string, `maxLagMs` a non-negative number or null.
 */
export function readOptionsError(opts: unknown): DbxError | null {
  if (opts === undefined) return null;
  const what = 'readQuery options';
  const bad = callOptionsError(what, opts, READ_OPTION_KEYS);
  if (bad !== null || opts === null) return bad;
  const o = opts as { node?: unknown; token?: unknown; maxLagMs?: unknown };
  const node = enumError(what, 'node', o.node, NODE_CLASSES);
  if (node !== null) return node;
  if (o.token !== undefined && typeof o.token !== 'string') {
    return invalidCallOption(what, 'token', 'expected a string (from writeToken())');
  }
  if (
    o.maxLagMs !== undefined &&
    o.maxLagMs !== null &&
    !(typeof o.maxLagMs === 'number' && o.maxLagMs >= 0)
  ) {
    return invalidCallOption(what, 'maxLagMs', 'expected a non-negative number or null');
  }
  return null;
}

/** `query` / `exec` options: known keys only, `name` a non-empty string. */
export function statementOptionsError(what: string, opts: unknown): DbxError | null {
  const bad = callOptionsError(what, opts, STATEMENT_OPTION_KEYS);
  if (bad !== null) return bad;
  const name = (opts as { name?: unknown } | undefined | null)?.name;
  if (name !== undefined && (typeof name !== 'string' || name.length === 0))
    return invalidCallOption(what, 'name', 'expected a non-empty string');
  return null;
}
