import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_LONG_TIMEOUT_MS,
  DEFAULT_STALL_TIMEOUT_MS,
  DEFAULT_TIMEOUT_MS,
  defineWrite,
} from '../../src/index.js';
import { parseOptions } from '../../src/options.js';

const writes = { w: defineWrite({ params: z.object({}), handler: () => null }) };

describe('options', () => {
  it('applies every default and freezes the result', () => {
    const o = parseOptions({ databasePath: 'x.db', writes });
    expect(o.timeouts).toEqual({
      defaultMs: DEFAULT_TIMEOUT_MS,
      longMs: DEFAULT_LONG_TIMEOUT_MS,
      perMethod: {},
    });
    expect(o.heartbeat).toEqual({
      intervalMs: DEFAULT_HEARTBEAT_INTERVAL_MS,
      timeoutMs: DEFAULT_HEARTBEAT_TIMEOUT_MS,
      stallTimeoutMs: DEFAULT_STALL_TIMEOUT_MS,
    });
    expect(DEFAULT_HEARTBEAT_TIMEOUT_MS).toBeLessThan(2_000); // failover is noticed within 2 s
    expect(Object.isFrozen(o)).toBe(true);
    expect(Object.isFrozen(o.timeouts)).toBe(true);
    expect(o.instanceId.length).toBeGreaterThan(0);
    expect(o.runtimeDir.length).toBeGreaterThan(0);
  });

  it.each([
    [{ writes }],
    [{ databasePath: 'x.db', writes: { w: { handler: 1 } } }],
    [{ databasePath: 'x.db', writes, timeouts: { defaultMs: -1 } }],
    [{ databasePath: 'x.db', writes, surprise: true }],
    [{ databasePath: 'x.db', writes, heartbeat: { intervalMs: 500, timeoutMs: 400 } }],
    [{ databasePath: 'x.db', writes, heartbeat: { intervalMs: 500, timeoutMs: 900, stallTimeoutMs: 1000 } }],
    [{ databasePath: 'x.db', writes: { 'db.write': writes.w } }],
    [{ databasePath: 'x.db', writes, logger: { info() {} } }],
  ])('rejects %j with DBPROXY_INVALID_OPTIONS', (bad) => {
    expect(() => parseOptions(bad)).toThrowError(
      expect.objectContaining({ code: 'DBPROXY_INVALID_OPTIONS' }),
    );
  });
});
