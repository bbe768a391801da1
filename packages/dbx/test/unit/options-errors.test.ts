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
