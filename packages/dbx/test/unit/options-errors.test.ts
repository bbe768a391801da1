import { CodedError } from '@x/core';
import fc from 'fast-check';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  collect,
  collectOne,
  createCluster,
  DbxError,
  DEFAULT_HEALTH_CHECK_INTERVAL_MS,
  DEFAULT_MAX_REPLICA_LAG_MS,
  DEFAULT_READ_CONSISTENCY,
  DEFAULT_RETRY_MAX_ATTEMPTS,
  isConnectionError,
  isConstraintViolation,
  isRetryable,
  isSerializationFailure,
  pgErrorCode,
} from '../../src/index.js';
import { formatLsn, parseLsn } from '../../src/internal/lsn.js';
import { backoffDelay } from '../../src/internal/util.js';
import { MAX_TIMER_MS } from '../../src/options.js';

function dbError(code: string, message = 'server said no'): pg.DatabaseError {
  const e = new pg.DatabaseError(message, message.length, 'error');
  e.code = code;
  e.severity = 'ERROR';
  return e;
}

describe('options', () => {
  it('fills every default, freezes the result, and creates no connection', async () => {
    const c = createCluster({ primary: 'postgres://u:p@127.0.0.1:1/db' });
    expect(c.options.retry.maxAttempts).toBe(DEFAULT_RETRY_MAX_ATTEMPTS);
    expect(c.options.healthCheck.intervalMs).toBe(DEFAULT_HEALTH_CHECK_INTERVAL_MS);
    expect(c.options.maxReplicaLagMs).toBe(DEFAULT_MAX_REPLICA_LAG_MS);
    expect(c.options.readConsistency).toBe(DEFAULT_READ_CONSISTENCY);
    expect(c.options.replicas).toEqual([]);
    expect(Object.isFrozen(c.options)).toBe(true);
    expect(Object.isFrozen(c.options.retry)).toBe(true);
    expect(c.stats().nodes.map((n) => n.totalCount)).toEqual([0]);
    await c.close();
  });

  it.each([
    [{}],
    [{ primary: '' }],
    [{ primary: 'x', retry: { maxAttempts: 0 } }],
    [{ primary: 'x', healthCheck: { timeoutMs: -1 } }],
    [{ primary: 'x', readConsistency: 'strong' }],
    [{ primary: 'x', logger: { info() {} } }],
    [{ primary: 'x', replicas: [{ name: '' }] }],
    [{ primary: 'x', replicas: [{ name: 'primary' }] }],
  ])('rejects %j with DBX_INVALID_OPTIONS', (opts) => {
    expect(() => createCluster(opts as never)).toThrow(
      expect.objectContaining({ code: 'DBX_INVALID_OPTIONS' }),
    );
  });

  it.each([
    [{ maxReplicaLag: 1000 }, 'maxReplicaLag: unknown option'],
    [{ pool: { maxx: 5 } }, 'pool.maxx: unknown option'],
    [{ retry: { attempts: 5 } }, 'retry.attempts: unknown option'],
    [{ retry: { budget: { ratioo: 0.1 } } }, 'retry.budget.ratioo: unknown option'],
    [{ healthCheck: { interval: 5 } }, 'healthCheck.interval: unknown option'],
    [{ readConsistency: 'strong' }, '"session"|"eventual"'],
  ])('refuses %j naming the key path (or the allowed values)', (extra, named) => {
    expect(() => createCluster({ primary: 'postgres://u:p@127.0.0.1:1/db', ...extra } as never)).toThrow(
      expect.objectContaining({ code: 'DBX_INVALID_OPTIONS', message: expect.stringContaining(named) }),
    );
  });

  it.each([
    [{ healthCheck: { intervalMs: MAX_TIMER_MS + 1 } }, 'healthCheck.intervalMs'],
    [{ healthCheck: { timeoutMs: 2 ** 40 } }, 'healthCheck.timeoutMs'],
    [{ closeDrainTimeoutMs: 2 ** 31 } as const, 'closeDrainTimeoutMs'],
    [{ retry: { maxDelayMs: 2 ** 31 } }, 'retry.maxDelayMs'],
    [{ readYourWritesWaitMs: 2 ** 31 }, 'readYourWritesWaitMs'],
    [{ pool: { connectionTimeoutMs: 2 ** 31 } }, 'pool.connectionTimeoutMs'],
  ])('refuses %j at construction: a Node timer that long fires at once', async (extra, named) => {
    expect(() => createCluster({ primary: 'postgres://u:p@127.0.0.1:1/db', ...extra })).toThrow(
      expect.objectContaining({ code: 'DBX_INVALID_OPTIONS', message: expect.stringContaining(named) }),
    );
    const longest = createCluster({
      primary: 'postgres://u:p@127.0.0.1:1/db',
      healthCheck: { intervalMs: MAX_TIMER_MS },
    });
    await longest.close();
  });

  it('per-call options refuse unknown keys and bad values before any I/O, naming the key', async () => {
    // 127.0.0.1:1 has no server: each call fails on its options, before it would try to connect.
    const c = createCluster({ primary: 'postgres://u:p@127.0.0.1:1/db' });
    const refused = (what: string) => ({
      code: 'DBX_INVALID_OPTIONS',
      message: expect.stringContaining(what),
    });
    const signall = { signall: AbortSignal.timeout(1) } as never;
    await expect(c.query('select 1', [], signall)).rejects.toMatchObject(refused('signall: unknown option'));
    await expect(c.queryRow('select 1', [], signall)).rejects.toMatchObject(refused('signall'));
    await expect(c.exec('select 1', [], signall)).rejects.toMatchObject(refused('signall'));
    await expect(c.readQuery('select 1', [], { maxLag: 5 } as never)).rejects.toMatchObject(
      refused('maxLag: unknown option (known: signal, node, token, maxLagMs)'),
    );
    await expect(c.readQueryRow('select 1', [], { node: 'replicas' } as never)).rejects.toMatchObject(
      refused('node: expected one of "primary"|"replica"|"any"'),
    );
    await expect(c.readQuery('select 1', [], { maxLagMs: -1 })).rejects.toMatchObject(refused('maxLagMs'));
    await expect(c.runTx(async () => 1, { readonly: true } as never)).rejects.toMatchObject(
      refused('readonly: unknown option'),
    );
    await expect(c.runTx(async () => 1, { isolation: 'snapshot' } as never)).rejects.toMatchObject(
      refused('"read committed"|"repeatable read"|"serializable"'),
    );
    await expect(c.begin({ readOnly: 'yes' } as never)).rejects.toMatchObject(refused('readOnly'));
    await expect(c.begin({ maxAttempts: 0 })).rejects.toMatchObject(refused('maxAttempts'));
    await expect(
      c
        .stream('select 1', [], { batch: 10 } as never)
        [Symbol.asyncIterator]()
        .next(),
    ).rejects.toMatchObject(refused('batch: unknown option'));
    await expect(c.copyTo('copy t to stdout', signall)[Symbol.asyncIterator]().next()).rejects.toMatchObject(
      refused('signall'),
    );
    await expect(c.copyFrom('copy t from stdin', (async function* () {})(), signall)).rejects.toMatchObject(
      refused('signall'),
    );
    await expect(c.connect(signall)).rejects.toMatchObject(refused('signall'));
    await expect(c.checkHealth(signall)).rejects.toMatchObject(refused('signall'));
    await expect(c.waitForPrimary({ timeout: 5 } as never)).rejects.toMatchObject(refused('timeout'));
    await expect(c.session(async () => 1, { tokn: null } as never)).rejects.toMatchObject(refused('tokn'));
    expect(c.stats().nodes.map((n) => n.totalCount)).toEqual([0]);
    await c.close();
  });

  it('names nodes primary, replica1.. unless named', async () => {
    const c = createCluster({
      primary: 'postgres://x@127.0.0.1:1/a',
      replicas: [
        'postgres://x@127.0.0.1:2/a',
        { name: 'eu', connectionString: 'postgres://x@127.0.0.1:3/a' },
      ],
    });
    expect(c.stats().nodes.map((n) => n.name)).toEqual(['primary', 'replica1', 'eu']);
    await c.close();
  });
});

describe('error classifiers', () => {
  it('DbxError is a @x/core CodedError with its own name and the same JSON form as before', () => {
    const e = new DbxError('DBX_NO_ROWS', 'no rows', { details: { sqlState: '02000' } });
    expect(e).toBeInstanceOf(DbxError);
    expect(e).toBeInstanceOf(CodedError);
    expect(e.name).toBe('DbxError');
    expect(e.sqlState).toBe('02000');
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      name: 'DbxError',
      code: 'DBX_NO_ROWS',
      retryable: false,
      details: { sqlState: '02000' },
    });
    expect('details' in new DbxError('DBX_TX_CLOSED', 'closed')).toBe(false);
  });

  it('finds the SQLSTATE on a pg error or anywhere in the cause chain', () => {
    const pgErr = dbError('23505');
    expect(pgErrorCode(pgErr)).toBe('23505');
    const wrapped = new DbxError('DBX_QUERY_FAILED', 'x', { cause: pgErr });
    expect(pgErrorCode(wrapped)).toBe('23505');
    expect(pgErrorCode(new DbxError('DBX_RETRY_EXHAUSTED', 'x', { cause: wrapped }))).toBe('23505');
    expect(pgErrorCode(new Error('plain'))).toBeUndefined();
    expect(pgErrorCode(Object.assign(new Error('sys'), { code: 'ECONNRESET' }))).toBeUndefined();
  });

  it('classifies connection, serialization, constraint and standby errors', () => {
    expect(isConnectionError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isConnectionError(dbError('57P01'))).toBe(true);
    expect(isConnectionError(dbError('08006'))).toBe(true);
    expect(isConnectionError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isConnectionError(dbError('23505'))).toBe(false);
    expect(isSerializationFailure(dbError('40001'))).toBe(true);
    expect(isSerializationFailure(dbError('40P01'))).toBe(true);
    expect(isConstraintViolation(dbError('23503'))).toBe(true);
    expect(isConstraintViolation(dbError('42P01'))).toBe(false);
    expect(isRetryable(dbError('25006'))).toBe(true);
    expect(isRetryable(dbError('40001'))).toBe(true);
    expect(isRetryable(dbError('42601'))).toBe(false);
    expect(isRetryable(new DbxError('DBX_RETRY_EXHAUSTED', 'x', { cause: dbError('40001') }))).toBe(false);
    expect(isRetryable(new DbxError('DBX_QUERY_CANCELLED', 'x'))).toBe(false);
  });
});

describe('read-your-writes tokens', () => {
  it('LSN text round-trips and orders like the server', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (a, b) => {
          expect(parseLsn(formatLsn(a))).toBe(a);
          expect(parseLsn(formatLsn(a)) < parseLsn(formatLsn(b))).toBe(a < b);
        },
      ),
    );
    expect(parseLsn('0/16B3748')).toBe(0x16b3748n);
    expect(parseLsn('1/0')).toBe(1n << 32n);
    expect(() => parseLsn('nope')).toThrow(expect.objectContaining({ code: 'DBX_INVALID_TOKEN' }));
  });
});

describe('backoff', () => {
  it('is full jitter: uniform within [0, min(max, base * 2^attempt))', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 30 }),
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 10_000 }),
        (attempt, base, max) => {
          const d = backoffDelay(attempt, base, max);
          expect(d).toBeGreaterThanOrEqual(0);
          expect(d).toBeLessThan(Math.max(1, Math.min(max, base * 2 ** attempt)));
        },
      ),
    );
    const samples = Array.from({ length: 2000 }, () => backoffDelay(3, 100, 10_000));
    expect(Math.min(...samples)).toBeLessThan(100);
    expect(Math.max(...samples)).toBeGreaterThan(700);
  });
});

describe('collect helpers', () => {
  const Row = z.object({ id: z.number() });
  it('validates rows, reports the failing index, and handles empty results', () => {
    expect(collect(Row)([{ id: 1 }, { id: 2 }])).toEqual([{ id: 1 }, { id: 2 }]);
    expect(() => collect(Row)([{ id: 1 }, { id: 'x' }])).toThrow(
      expect.objectContaining({ code: 'DBX_ROW_INVALID', details: expect.objectContaining({ index: 1 }) }),
    );
    expect(collectOne(Row, { optional: true })({ rows: [], rowCount: 0, fields: [] })).toBeUndefined();
    expect(() => collectOne(Row)({ rows: [], rowCount: 0, fields: [] })).toThrow(
      expect.objectContaining({ code: 'DBX_NO_ROWS' }),
    );
  });
});
