import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type ClientError,
  createSyncClient,
  DEFAULT_SYNC_KEY_COLUMNS,
  isClientError,
  type SyncClientOptionsInput,
} from '../../../src/client/index.js';

const db = new Database(':memory:');
afterAll(() => db.close());

const base: SyncClientOptionsInput = {
  writer: db,
  baseUrl: 'http://127.0.0.1:9',
  schema: 'business',
  tables: [{ table: 'notes' }],
};

/** The OVERSYNC_CLIENT_INVALID_OPTIONS error `createSyncClient` throws for `extra` over `base`. */
function refusal(extra: Record<string, unknown>): ClientError {
  try {
    createSyncClient({ ...base, ...extra } as SyncClientOptionsInput);
  } catch (e) {
    if (isClientError(e, 'OVERSYNC_CLIENT_INVALID_OPTIONS')) return e;
    throw e;
  }
  throw new Error(`options were accepted: ${JSON.stringify(Object.keys(extra))}`);
}

describe('client options: one rule (unknown keys refused, bad values named)', () => {
  it('accepts the minimal options and fills every default', () => {
    const logger = { debug() {}, info() {}, warn() {}, error() {} };
    const client = createSyncClient({ ...base, logger });
    expect(client.options.tables[0]?.syncKeyColumns).toEqual([...DEFAULT_SYNC_KEY_COLUMNS]);
    expect(client.options.resolver).toBe('server-wins');
    expect(client.options.watch).toEqual({ mode: 'off', fallbackIntervalMs: 60_000 });
    expect(Object.isFrozen(client.options.retry)).toBe(true);
    expect(Object.isFrozen(client.options.tables[0])).toBe(true);
    // the caller's own objects are not frozen behind its back
    expect(client.options.logger).toBe(logger);
    expect(Object.isFrozen(logger)).toBe(false);
  });

  it('refuses an unknown top-level key, naming it (a typo of resolver)', () => {
    const e = refusal({ resolve: 'client-wins' });
    expect(e.message).toContain('resolve: unknown option');
  });

  it('refuses unknown nested keys, naming their path', () => {
    expect(refusal({ retry: { maxAttemps: 5 } }).message).toContain('retry.maxAttemps: unknown option');
    expect(refusal({ watch: { mode: 'auto', fallbackInterval: 10 } }).message).toContain(
      'watch.fallbackInterval: unknown option',
    );
    expect(refusal({ tables: [{ table: 'notes', syncKeyColumn: 'id' }] }).message).toContain(
      'tables.0.syncKeyColumn: unknown option',
    );
  });

  it('names the allowed values of a bad enum value', () => {
    const watch = refusal({ watch: { mode: 'on' } });
    expect(watch.message).toContain('watch.mode');
    expect(watch.message).toContain('"off"|"auto"');
    expect(refusal({ durability: 'extra' }).message).toMatch(/durability: .*"normal"\|"full"/);
    expect(refusal({ resolver: 'client-win' }).message).toMatch(
      /resolver: .*"server-wins"\|"client-wins" or a conflict resolver function/,
    );
  });

  it('refuses a logger without the four methods', () => {
    expect(refusal({ logger: { warn: () => {} } }).message).toContain('logger: logger must have');
  });

  it('refuses a changes() buffer size that cannot work', () => {
    const client = createSyncClient(base);
    expect(() => client.changes({ bufferSize: 0 })).toThrow(
      expect.objectContaining({ code: 'OVERSYNC_CLIENT_INVALID_OPTIONS' }),
    );
    expect(() => client.changes({ bufferSize: 2.5 })).toThrow(/bufferSize must be a positive integer/);
  });
});
