import type { z } from 'zod';
import { TestkitError } from '../errors.js';

/** Validates an options object once (zod), applies defaults and freezes it; TESTKIT_INVALID_OPTIONS otherwise. */
export function parseOptions<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
): Readonly<z.output<S>> {
  const result = schema.safeParse(input ?? {});
  if (!result.success) {
    const issues = result.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
    throw new TestkitError(
      'TESTKIT_INVALID_OPTIONS',
      `invalid ${what} options: ${issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ')}`,
      { details: { issues }, cause: result.error },
    );
  }
  return Object.freeze(result.data) as Readonly<z.output<S>>;
}
