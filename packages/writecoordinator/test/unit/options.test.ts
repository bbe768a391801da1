import {
  createWriteCoordinator,
  DEFAULT_MAX_BATCH_SIZE,
  DEFAULT_QUEUE_SIZE,
  isWriteCoordinatorError,
  META_TABLE,
  REQUESTS_TABLE,
} from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { describe, expect } from 'vitest';
import { it } from '../helpers/db.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return isWriteCoordinatorError(e) ? e.code : `not a coordinator error: ${String(e)}`;
  }
  return undefined;
}

describe('options and database settings', () => {
  it('applies defaults, freezes the options and exposes them', async ({ tdb: t }) => {
    const db = t.open();
    const wc = createWriteCoordinator({ database: db });
    expect(wc.options.queueSize).toBe(DEFAULT_QUEUE_SIZE);
    expect(wc.options.maxBatchSize).toBe(DEFAULT_MAX_BATCH_SIZE);
    expect(wc.options.durability).toBe('normal');
    expect(Object.isFrozen(wc.options)).toBe(true);
    expect(Object.isFrozen(wc.options.idempotency)).toBe(true);
    expect(Object.isFrozen(wc.options.checkpoint)).toBe(true);
    await wc.close();
  });

  it('keeps the database and the logger it is given by reference, unfrozen', async ({ tdb: t }) => {
    const db = t.open();
    const noop = () => {};
    const logger = { debug: noop, info: noop, warn: noop, error: noop };
    const idempotency = { maxAgeMs: 1_000 };
    const wc = createWriteCoordinator({ database: db, logger, idempotency });
    expect(wc.options.database).toBe(db);
    expect(wc.options.logger).toBe(logger);
    expect(Object.isFrozen(logger)).toBe(false);
    expect(Object.isFrozen(db)).toBe(false);
    // The options object the caller passed stays theirs; the parsed copy is frozen.
    expect(Object.isFrozen(idempotency)).toBe(false);
    expect(wc.options.idempotency).toMatchObject({ maxAgeMs: 1_000 });
    await wc.close();
  });

  it('sets WAL, synchronous, foreign_keys and busy_timeout, and creates its tables', async ({ tdb: t }) => {
    const db = t.open();
    const wc = createWriteCoordinator({ database: db, busyTimeoutMs: 1234, durability: 'full' });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('synchronous', { simple: true })).toBe(2);
    expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(db.pragma('busy_timeout', { simple: true })).toBe(1234);
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all();
    expect(tables).toEqual(expect.arrayContaining([META_TABLE, REQUESTS_TABLE]));
    await wc.close();
    const wc2 = createWriteCoordinator({ database: db });
    expect(db.pragma('synchronous', { simple: true })).toBe(1);
    await wc2.close();
  });

  it('rejects bad options with WRITECOORDINATOR_INVALID_OPTIONS', async ({ tdb: t }) => {
    const db = t.open();
    expect(codeOf(() => createWriteCoordinator({ database: db, queueSize: 0 }))).toBe(
      'WRITECOORDINATOR_INVALID_OPTIONS',
    );
    expect(codeOf(() => createWriteCoordinator({ database: db, durability: 'fast' as 'full' }))).toBe(
      'WRITECOORDINATOR_INVALID_OPTIONS',
    );
    expect(codeOf(() => createWriteCoordinator({ database: {} as never }))).toBe(
      'WRITECOORDINATOR_INVALID_OPTIONS',
    );
    expect(codeOf(() => createWriteCoordinator({ database: db, nope: 1 } as never))).toBe(
      'WRITECOORDINATOR_INVALID_OPTIONS',
    );
  });

  it('refuses a read-only, in-memory or closed database with WRITECOORDINATOR_BAD_DATABASE', async ({
    tdb: t,
  }) => {
    t.open().close(); // creates the file
    const ro = new Database(t.path, { readonly: true });
    expect(codeOf(() => createWriteCoordinator({ database: ro }))).toBe('WRITECOORDINATOR_BAD_DATABASE');
    ro.close();
    const mem = new Database(':memory:');
    expect(codeOf(() => createWriteCoordinator({ database: mem }))).toBe('WRITECOORDINATOR_BAD_DATABASE');
    mem.close();
    expect(codeOf(() => createWriteCoordinator({ database: mem }))).toBe('WRITECOORDINATOR_BAD_DATABASE');
  });
});
