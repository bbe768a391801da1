import { formatOptionIssues, optionIssues, parseOptions as parseAndFreeze } from '@x/core';
import type { z } from 'zod';
import { TestkitError } from '../errors.js';

/**
 * Validates an options object once (zod), applies defaults and deep-freezes it (@x/core's
 * parseOptions); TESTKIT_INVALID_OPTIONS, naming each issue's key path (an unknown key's own path),
 * otherwise.
 */
export function parseOptions<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
): Readonly<z.output<S>> {
  return parseAndFreeze(schema, input ?? {}, (error) => {
    const issues = optionIssues(error);
    return new TestkitError(
      'TESTKIT_INVALID_OPTIONS',
      `invalid ${what} options: ${formatOptionIssues(issues)}`,
      {
        details: { issues },
        cause: error,
      },
    );
  });
}
