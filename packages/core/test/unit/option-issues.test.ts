import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { formatOptionIssues, optionIssues } from '../../src/index.js';

const schema = z.strictObject({
  mode: z.enum(['session', 'eventual']).default('session'),
  retry: z
    .strictObject({
      maxAttempts: z.number().int().positive().default(3),
      budget: z.strictObject({ ratio: z.number().default(0.2) }).prefault({}),
    })
    .prefault({}),
});

function issuesOf(input: unknown) {
  const r = schema.safeParse(input);
  if (r.success) throw new Error('expected a failed parse');
  return optionIssues(r.error);
}

describe('optionIssues', () => {
  it('names every unknown key by its own full path', () => {
    expect(issuesOf({ maxReplicaLag: 1, other: 2, retry: { budget: { ratioo: 1 } } })).toEqual(
      expect.arrayContaining([
        { path: 'maxReplicaLag', message: 'unknown option' },
        { path: 'other', message: 'unknown option' },
        { path: 'retry.budget.ratioo', message: 'unknown option' },
      ]),
    );
  });

  it('keeps the path of other issues, and the allowed values of an enum', () => {
    const issues = issuesOf({ mode: 'strong', retry: { maxAttempts: 0 } });
    expect(issues).toHaveLength(2);
    const mode = issues.find((i) => i.path === 'mode');
    expect(mode?.message).toContain('"session"');
    expect(mode?.message).toContain('"eventual"');
    expect(issues.some((i) => i.path === 'retry.maxAttempts')).toBe(true);
  });

  it('formats the issues on one line, (root) for the whole object', () => {
    expect(
      formatOptionIssues([
        { path: '', message: 'expected an object' },
        { path: 'retry.x', message: 'unknown option' },
      ]),
    ).toBe('(root): expected an object; retry.x: unknown option');
    expect(formatOptionIssues(issuesOf(null))).toMatch(/^\(root\): /);
  });
});
