import { describe, expect, it } from 'vitest';
import { isLogger, SILENT_LOGGER } from '../../src/index.js';

describe('logger contract', () => {
  it('SILENT_LOGGER is a frozen Logger whose methods do nothing', () => {
    expect(isLogger(SILENT_LOGGER)).toBe(true);
    expect(Object.isFrozen(SILENT_LOGGER)).toBe(true);
    expect(SILENT_LOGGER.error({ err: 'x' }, 'msg')).toBeUndefined();
  });

  it('isLogger needs the four methods', () => {
    const methods = { debug() {}, info() {}, warn() {}, error() {} };
    expect(isLogger(methods)).toBe(true);
    expect(isLogger(console)).toBe(true);
    expect(isLogger({ ...methods, warn: 'no' })).toBe(false);
    expect(isLogger({ debug() {}, info() {}, warn() {} })).toBe(false);
    expect(isLogger(null)).toBe(false);
    expect(isLogger('logger')).toBe(false);
  });
});
