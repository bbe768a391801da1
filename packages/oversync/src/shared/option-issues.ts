import { formatOptionIssues, optionIssues, parseOptions } from '@x/core';
import type { z } from 'zod';

/**
 * `@x/core`'s `parseOptions` (one parse, one freeze) whose failure is `fail(message, details)`: the
 * message says `invalid <what> options: ` then every issue with its key path, as every `@x` package
 * words them (`retry.maxAttemps: unknown option`); the details carry zod's issues.
 */
export function parseOversyncOptions<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
  fail: (message: string, details: { issues: z.ZodError['issues'] }) => Error,
): Readonly<z.output<S>> {
  return parseOptions(schema, input, (error) =>
    fail(`invalid ${what} options: ${formatOptionIssues(optionIssues(error))}`, { issues: error.issues }),
  );
}
