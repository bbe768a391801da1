import type { z } from 'zod';

/**
 * Validates an options object once and freezes the result once.
 *
 * - `schema` is the package's zod (v4) schema holding every default. Options objects are declared
 *   with `z.strictObject(...)` (or `.strict()`), so an unknown key is refused with an
 *   `unrecognized_keys` issue that names it instead of being dropped silently.
 * - A failed parse throws `toError(zodError)`: the package's own `..._INVALID_OPTIONS` error,
 *   carrying the issues.
 * - The parsed value is deep-frozen by `deepFreeze`, except the objects the caller handed in that the
 *   schema let through by reference (a logger, a pool, a cluster, handler objects, TLS settings): those
 *   stay the caller's and are never frozen behind their back. Everything the parse built is frozen.
 *
 * zod is only a peer dependency of `@x/core`: this function calls `schema.safeParse` and imports no zod
 * code at run time.
 *
 * @example
 * ```ts
 * import { parseOptions } from '@x/core';
 * import { z } from 'zod';
 *
 * const schema = z.strictObject({ port: z.number().int().default(8080), tags: z.array(z.string()).default([]) });
 * const options = parseOptions(schema, { tags: ['a'] }, (e) => new Error(`invalid options: ${e.message}`));
 * console.log(options.port, Object.isFrozen(options.tags)); // 8080 true
 * try {
 *   parseOptions(schema, { prot: 1 }, (e) => new Error(`invalid options: ${e.issues[0]?.message}`));
 * } catch (e) {
 *   console.log((e as Error).message); // invalid options: Unrecognized key: "prot"
 * }
 * ```
 */
export function parseOptions<S extends z.ZodType>(
  schema: S,
  input: unknown,
  toError: (error: z.ZodError) => Error,
): Readonly<z.output<S>> {
  const result = schema.safeParse(input);
  if (!result.success) throw toError(result.error as z.ZodError);
  const callers = reachable(input);
  return deepFreeze(result.data, { skip: (v) => callers.has(v) }) as Readonly<z.output<S>>;
}

/** The options of {@link deepFreeze}. */
export interface DeepFreezeOptions {
  /** Objects for which this returns true are left as they are, and not descended into. */
  skip?: ((value: object) => boolean) | undefined;
}

/**
 * Freezes `value` and every plain object (prototype `Object.prototype` or null) and array reachable
 * from it through plain objects and arrays. Class instances, functions, typed arrays, Maps and the
 * like are neither frozen nor descended into: they hold state their owners go on changing. Cycles
 * are fine. Returns `value`.
 *
 * @example
 * ```ts
 * import { deepFreeze } from '@x/core';
 *
 * const config = deepFreeze({ limits: { rows: 10 }, when: new Date(0) });
 * console.log(Object.isFrozen(config.limits), Object.isFrozen(config.when)); // true false (class instances stay as they are)
 * ```
 */
export function deepFreeze<T>(value: T, options: DeepFreezeOptions = {}): T {
  const seen = new Set<object>();
  const visit = (v: unknown): void => {
    if (!isPlainContainer(v) || seen.has(v)) return;
    seen.add(v);
    if (options.skip?.(v)) return;
    for (const key of Reflect.ownKeys(v)) visit((v as Record<PropertyKey, unknown>)[key]);
    Object.freeze(v);
  };
  visit(value);
  return value;
}

function isPlainContainer(v: unknown): v is object {
  if (typeof v !== 'object' || v === null) return false;
  if (Array.isArray(v)) return true;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Every object reachable from `input` through plain objects and arrays (itself included). */
function reachable(input: unknown): Set<object> {
  const found = new Set<object>();
  const visit = (v: unknown): void => {
    if ((typeof v !== 'object' && typeof v !== 'function') || v === null || found.has(v)) return;
    found.add(v);
    if (!isPlainContainer(v)) return;
    for (const key of Reflect.ownKeys(v)) visit((v as Record<PropertyKey, unknown>)[key]);
  };
  visit(input);
  return found;
}
