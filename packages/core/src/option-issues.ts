import type { z } from 'zod';

/** One problem of an options object: the key path (`retry.budget.ratio`, `replicas.0`) and what is wrong. */
export interface OptionIssue {
  /** Dot-separated key path; for an unknown key, the path of that key itself. `''` for the whole object. */
  path: string;
  message: string;
}

/**
 * The issues of a failed options parse, one per problem, each with its full key path: an unknown key
 * (`unrecognized_keys`) gives one issue per key, at that key's own path; an enum gives zod's message,
 * which lists the allowed values.
 *
 * @example
 * ```ts
 * import { optionIssues } from '@x/core';
 * import { z } from 'zod';
 *
 * const schema = z.strictObject({ retry: z.strictObject({ maxAttempts: z.number().int().min(1) }) });
 * const result = schema.safeParse({ retry: { maxAttempts: 0, budget: 1 } });
 * if (!result.success) console.log(optionIssues(result.error));
 * // [ { path: 'retry.maxAttempts', message: 'Too small: expected number to be >=1' },
 * //   { path: 'retry.budget', message: 'unknown option' } ]
 * ```
 */
export function optionIssues(error: z.ZodError): OptionIssue[] {
  const out: OptionIssue[] = [];
  for (const issue of error.issues) {
    const at = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: [...at, key].join('.'), message: 'unknown option' });
    } else {
      out.push({ path: at.join('.'), message: issue.message });
    }
  }
  return out;
}

/**
 * `retry.maxAttempts: Too small...; maxReplicaLag: unknown option`: the issues on one line, for an
 * error message; `(root)` stands for the empty path.
 *
 * @example
 * ```ts
 * import { formatOptionIssues } from '@x/core';
 *
 * const line = formatOptionIssues([
 *   { path: 'retry.maxAttempts', message: 'Too small: expected number to be >=1' },
 *   { path: 'maxReplicaLag', message: 'unknown option' },
 * ]);
 * console.log(line); // retry.maxAttempts: Too small: expected number to be >=1; maxReplicaLag: unknown option
 * ```
 */
export function formatOptionIssues(issues: readonly OptionIssue[]): string {
  return issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ');
}
