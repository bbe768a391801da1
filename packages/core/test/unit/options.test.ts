import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { deepFreeze, isLogger, type Logger, parseOptions } from '../../src/index.js';

class InvalidOptions extends Error {
  constructor(readonly issues: z.core.$ZodIssue[]) {
    super(`invalid options: ${issues.map((i) => i.message).join('; ')}`);
  }
}
const toError = (e: z.ZodError) => new InvalidOptions(e.issues);

const schema = z.strictObject({
  sizeMs: z.number().int().positive().default(10),
  nested: z.strictObject({ list: z.array(z.string()).default(['a']) }).prefault({}),
  logger: z.custom<Logger>(isLogger).optional(),
  tls: z.custom<object>((v) => typeof v === 'object').optional(),
});

describe('parseOptions', () => {
  it('applies defaults and deep-freezes what the parse built', () => {
    const o = parseOptions(schema, {}, toError);
    expect(o).toEqual({ sizeMs: 10, nested: { list: ['a'] } });
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(o.nested)).toBe(true);
    expect(Object.isFrozen(o.nested.list)).toBe(true);
  });

  it('refuses an unknown key, naming it, through toError', () => {
    let caught: unknown;
    try {
      parseOptions(schema, { sizeMs: 5, sizeMS: 6 }, toError);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(InvalidOptions);
    const issues = (caught as InvalidOptions).issues;
    expect(issues).toEqual([expect.objectContaining({ code: 'unrecognized_keys', keys: ['sizeMS'] })]);
    expect((caught as Error).message).toContain('sizeMS');
  });

  it('refuses a nested unknown key and a wrong type', () => {
    expect(() => parseOptions(schema, { nested: { lst: [] } }, toError)).toThrow(/lst/);
    expect(() => parseOptions(schema, { sizeMs: -1 }, toError)).toThrow(InvalidOptions);
  });

  it('leaves the caller objects passed through by reference unfrozen', () => {
    const lines: string[] = [];
    const logger = {
      lines,
      debug() {},
      info() {},
      warn(_: object, msg?: string) {
        this.lines.push(msg ?? '');
      },
      error() {},
    };
    const tls = { ca: ['pem'], rejectUnauthorized: true };
    const input = { logger, tls, nested: { list: ['x'] } };
    const o = parseOptions(schema, input, toError);
    expect(o.logger).toBe(logger);
    expect(Object.isFrozen(logger)).toBe(false);
    expect(Object.isFrozen(tls)).toBe(false);
    expect(Object.isFrozen(tls.ca)).toBe(false);
    o.logger?.warn({}, 'still writable');
    expect(lines).toEqual(['still writable']);
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(o.nested.list)).toBe(true);
    expect(Object.isFrozen(input)).toBe(false);
  });
});

describe('deepFreeze', () => {
  it('freezes plain objects and arrays, cycles included, but not class instances or typed arrays', () => {
    class Pool {
      size = 1;
    }
    const bytes = new Uint8Array(2);
    const pool = new Pool();
    const o: Record<string, unknown> = { a: { b: [1, { c: 2 }] }, pool, bytes, fn() {} };
    o.self = o;
    deepFreeze(o);
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen((o.a as { b: unknown[] }).b[1])).toBe(true);
    expect(Object.isFrozen(pool)).toBe(false);
    expect(Object.isFrozen(bytes)).toBe(false);
    pool.size = 2;
    expect(pool.size).toBe(2);
  });

  it('skip leaves an object and what is below it alone', () => {
    const keep = { inner: { x: 1 } };
    const o = deepFreeze({ keep, other: { y: 1 } }, { skip: (v) => v === keep });
    expect(Object.isFrozen(o.other)).toBe(true);
    expect(Object.isFrozen(keep)).toBe(false);
    expect(Object.isFrozen(keep.inner)).toBe(false);
  });
});
