import { describe, expect, it } from 'vitest';
import { CodedError, hasCodePrefix } from '../../src/index.js';

type ThingCode = 'THING_BROKEN' | 'THING_BUSY';

class ThingError extends CodedError<ThingCode> {
  override readonly name = 'ThingError';
}

/** A subclass with a field of its own, set after the base's, as dbproxy's `applied`. */
class WireError extends CodedError<'WIRE_LOST'> {
  override readonly name = 'WireError';
  readonly applied: 'no' | 'unknown';
  constructor(message: string, applied: 'no' | 'unknown', details?: Record<string, unknown>) {
    super('WIRE_LOST', message, details === undefined ? { retryable: true } : { retryable: true, details });
    this.applied = applied;
  }
}

describe('CodedError', () => {
  it('carries code, message, retryable (false by default), details and cause', () => {
    const cause = new Error('driver said no');
    const e = new ThingError('THING_BUSY', 'the thing is busy', {
      retryable: true,
      details: { thing: 1 },
      cause,
    });
    expect(e.code).toBe('THING_BUSY');
    expect(e.message).toBe('the thing is busy');
    expect(e.retryable).toBe(true);
    expect(e.details).toEqual({ thing: 1 });
    expect(e.cause).toBe(cause);
    const bare = new ThingError('THING_BROKEN', 'broken');
    expect(bare.retryable).toBe(false);
    expect('details' in bare).toBe(false);
    expect('cause' in bare).toBe(false);
  });

  it('keeps the subclass name, instanceof and the stack header', () => {
    const e = new ThingError('THING_BROKEN', 'broken');
    expect(e.name).toBe('ThingError');
    expect(e).toBeInstanceOf(ThingError);
    expect(e).toBeInstanceOf(CodedError);
    expect(e).toBeInstanceOf(Error);
    expect(e.stack?.split('\n')[0]).toBe('ThingError: broken');
    expect(new CodedError('X', 'plain').name).toBe('CodedError');
  });

  it('serialises as name, code, retryable, the subclass fields, then details; never message, stack or cause', () => {
    const e = new ThingError('THING_BROKEN', 'secret-free message', {
      details: { n: 1 },
      cause: new Error('c'),
    });
    expect(JSON.stringify(e)).toBe(
      '{"name":"ThingError","code":"THING_BROKEN","retryable":false,"details":{"n":1}}',
    );
    expect(JSON.stringify(new ThingError('THING_BUSY', 'm'))).toBe(
      '{"name":"ThingError","code":"THING_BUSY","retryable":false}',
    );
    expect(JSON.stringify(new WireError('lost', 'unknown', { at: 'send' }))).toBe(
      '{"name":"WireError","code":"WIRE_LOST","retryable":true,"applied":"unknown","details":{"at":"send"}}',
    );
    expect(new WireError('lost', 'no').toJSON()).toEqual({
      name: 'WireError',
      code: 'WIRE_LOST',
      retryable: true,
      applied: 'no',
    });
  });
});

describe('hasCodePrefix', () => {
  it('accepts an Error with a code of the prefix and a boolean retryable, from any class', () => {
    expect(hasCodePrefix(new ThingError('THING_BROKEN', 'm'), 'THING_')).toBe(true);
    // another copy of a package: a plain Error with the same fields
    expect(
      hasCodePrefix(Object.assign(new Error('m'), { code: 'THING_BUSY', retryable: true }), 'THING_'),
    ).toBe(true);
  });
  it('refuses another prefix, a missing retryable and what is not an Error', () => {
    expect(hasCodePrefix(new ThingError('THING_BROKEN', 'm'), 'WIRE_')).toBe(false);
    expect(hasCodePrefix(Object.assign(new Error('m'), { code: 'THING_BUSY' }), 'THING_')).toBe(false);
    expect(hasCodePrefix({ code: 'THING_BUSY', retryable: false, message: 'm' }, 'THING_')).toBe(false);
    expect(hasCodePrefix(undefined, 'THING_')).toBe(false);
  });
});
