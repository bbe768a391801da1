import { CodedError } from '@x/core';
import { describe, expect, it } from 'vitest';
import { measureThroughput } from '../../src/bench/index.js';
import {
  createTcpProxy,
  createTestDatabase,
  isTestkitError,
  spawnNode,
  startPostgres,
  TestkitError,
  tempDir,
  waitFor,
} from '../../src/index.js';

const invalid = { code: 'TESTKIT_INVALID_OPTIONS' };

describe('options are validated before anything starts', () => {
  it('startPostgres', async () => {
    await expect(startPostgres({ replicas: 1.5 })).rejects.toMatchObject(invalid);
    await expect(startPostgres({ replicas: 9 })).rejects.toMatchObject(invalid);
    await expect(startPostgres({ settings: { 'bad name': '1' } })).rejects.toMatchObject(invalid);
    await expect(startPostgres({ nope: true } as never)).rejects.toMatchObject({
      ...invalid,
      message: expect.stringContaining('nope: unknown option'),
      details: { issues: [{ path: 'nope', message: 'unknown option' }] },
    });
  });

  it('createTestDatabase', async () => {
    await expect(createTestDatabase({ prefix: '' })).rejects.toMatchObject(invalid);
    await expect(createTestDatabase({ prefix: 'x'.repeat(41) })).rejects.toMatchObject(invalid);
  });

  it('createTcpProxy, tempDir, measureThroughput', async () => {
    await expect(createTcpProxy({ host: '127.0.0.1', port: 0 })).rejects.toMatchObject(invalid);
    await expect(tempDir('a/b')).rejects.toMatchObject(invalid);
    await expect(measureThroughput(() => undefined, { concurrency: 0 })).rejects.toMatchObject(invalid);
    await expect(createTcpProxy({ host: '127.0.0.1', port: 5432, tls: true } as never)).rejects.toMatchObject(
      {
        ...invalid,
        message: expect.stringContaining('tls: unknown option'),
      },
    );
  });

  it('waitFor and spawnNode refuse unknown keys and intervals a timer cannot hold, before running', async () => {
    let calls = 0;
    const condition = () => ++calls > 0;
    await expect(waitFor(condition, { timeout: 5 } as never)).rejects.toMatchObject({
      ...invalid,
      message: expect.stringContaining('timeout: unknown option'),
    });
    await expect(waitFor(condition, { intervalMs: 2 ** 31 })).rejects.toMatchObject(invalid);
    await expect(waitFor(condition, { intervalMs: -1 })).rejects.toMatchObject(invalid);
    expect(calls).toBe(0);
    await waitFor(condition, { timeoutMs: 1_000, intervalMs: 1, what: 'the first call' });
    expect(calls).toBe(1);
    expect(() => spawnNode('never-run.js', [], { cdw: '/tmp' } as never)).toThrow(
      expect.objectContaining({ ...invalid, message: expect.stringContaining('cdw: unknown option') }),
    );
  });
});

describe('TestkitError', () => {
  it('is a @x/core CodedError with its own name, guard and JSON form', () => {
    const cause = new Error('spawn failed');
    const e = new TestkitError('TESTKIT_TIMEOUT', 'timed out', { details: { timeoutMs: 5 }, cause });
    expect(e).toBeInstanceOf(TestkitError);
    expect(e).toBeInstanceOf(CodedError);
    expect(e.name).toBe('TestkitError');
    expect(e.cause).toBe(cause);
    expect(isTestkitError(e, 'TESTKIT_TIMEOUT')).toBe(true);
    expect(isTestkitError(e, 'TESTKIT_ABORTED')).toBe(false);
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      name: 'TestkitError',
      code: 'TESTKIT_TIMEOUT',
      retryable: false,
      details: { timeoutMs: 5 },
    });
  });
});
