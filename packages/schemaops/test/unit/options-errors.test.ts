import { CodedError } from '@x/core';
import { createCluster } from '@x/dbx';
import { afterAll, describe, expect, it } from 'vitest';
import {
  createSchemaOps,
  DEFAULT_CONCURRENCY,
  DEFAULT_FAIL_FAST,
  DEFAULT_LEDGER_SCHEMA,
  DEFAULT_LOCK_WAIT_MS,
  DEFAULT_RECONCILER_INTERVAL_MS,
  DEFAULT_RECONCILER_MAX_ATTEMPTS,
  databasePerTenant,
  isSchemaOpsError,
  physicalDdlRequired,
  reconcileBackoffMs,
  SCHEMAOPS_ERROR_CODES,
  SchemaOpsError,
  schemaPerTenant,
  withPhysicalDdlRequired,
} from '../../src/index.js';
import { requestHash, stableJson } from '../../src/internal/request-hash.js';

// A cluster object is only validated here, never connected (createCluster does no I/O up front).
const cluster = createCluster({ primary: 'postgres://u:p@127.0.0.1:1/none' });
afterAll(() => cluster.close());

function invalid(fn: () => unknown): SchemaOpsError {
  try {
    fn();
  } catch (e) {
    expect(isSchemaOpsError(e, 'SCHEMAOPS_INVALID_OPTIONS')).toBe(true);
    return e as SchemaOpsError;
  }
  throw new Error('expected SCHEMAOPS_INVALID_OPTIONS');
}

describe('options', () => {
  it('resolves every default and freezes the result', async () => {
    const ops = createSchemaOps({ cluster, tenants: schemaPerTenant({ cluster }) });
    expect(ops.options).toMatchObject({
      ledgerSchema: DEFAULT_LEDGER_SCHEMA,
      concurrency: DEFAULT_CONCURRENCY,
      failFast: DEFAULT_FAIL_FAST,
      lockWaitMs: DEFAULT_LOCK_WAIT_MS,
      reconciler: {
        intervalMs: DEFAULT_RECONCILER_INTERVAL_MS,
        maxAttempts: DEFAULT_RECONCILER_MAX_ATTEMPTS,
      },
    });
    expect(Object.isFrozen(ops.options)).toBe(true);
    expect(Object.isFrozen(ops.options.reconciler)).toBe(true);
    await ops.close();
  });

  it('rejects bad options with SCHEMAOPS_INVALID_OPTIONS and the zod issues', () => {
    const tenants = schemaPerTenant({ cluster });
    const e = invalid(() => createSchemaOps({ cluster, tenants, concurrency: 0 }));
    expect(e.details?.issues).toBeInstanceOf(Array);
    invalid(() => createSchemaOps({ cluster: {} as never, tenants }));
    invalid(() => createSchemaOps({ cluster, tenants: {} as never }));
    invalid(() => createSchemaOps({ cluster, tenants, ledgerSchema: 'Bad-Name' }));
    invalid(() => createSchemaOps({ cluster, tenants, lockWaitMs: -1 }));
    invalid(() => createSchemaOps({ cluster, tenants, reconciler: { maxAttempts: 0 } }));
    invalid(() => createSchemaOps({ cluster, tenants, operations: { x: {} as never } }));
    invalid(() => createSchemaOps({ cluster, tenants, unknown: 1 } as never));
    invalid(() => schemaPerTenant({ cluster, listTenants: 'no' as never }));
    invalid(() => databasePerTenant({ listTenants: async () => [], connect: undefined as never }));
    invalid(() => databasePerTenant({ listTenants: async () => [], connect: () => 'x', maxOpenClusters: 0 }));
  });
});

describe('unknown keys and options that cannot work', () => {
  it('refuses unknown keys at every level, naming the key path', () => {
    const tenants = schemaPerTenant({ cluster });
    expect(invalid(() => createSchemaOps({ cluster, tenants, lockWait: 1 } as never)).message).toContain(
      'lockWait: unknown option',
    );
    expect(
      invalid(() => createSchemaOps({ cluster, tenants, reconciler: { interval: 5 } } as never)).message,
    ).toContain('reconciler.interval: unknown option');
    expect(invalid(() => schemaPerTenant({ cluster, prefix: 'x' } as never)).message).toContain(
      'prefix: unknown option',
    );
    const dbPer = { listTenants: async () => [], connect: () => 'postgres://x@127.0.0.1:1/x' };
    expect(invalid(() => databasePerTenant({ ...dbPer, maxOpen: 2 } as never)).message).toContain(
      'maxOpen: unknown option',
    );
  });

  it('checks databasePerTenant clusterOptions at construction, with dbx, not when a tenant opens', async () => {
    const dbPer = { listTenants: async () => [], connect: () => 'postgres://x@127.0.0.1:1/x' };
    const typo = invalid(() =>
      databasePerTenant({ ...dbPer, clusterOptions: { maxReplicaLag: 1 } as never }),
    );
    expect(typo.message).toContain('maxReplicaLag: unknown option');
    expect(typo.cause).toMatchObject({ code: 'DBX_INVALID_OPTIONS' });
    expect(
      invalid(() => databasePerTenant({ ...dbPer, clusterOptions: { pool: { max: 0 } } })).message,
    ).toContain('pool.max');
    expect(
      invalid(() => databasePerTenant({ ...dbPer, clusterOptions: { primary: 'postgres://y' } as never }))
        .message,
    ).toContain('clusterOptions.primary');
    const ok = databasePerTenant({
      ...dbPer,
      clusterOptions: { pool: { max: 1 }, retry: { maxAttempts: 1 } },
    });
    await ok.close();
  });

  it('refuses unknown keys of run input, reconcile options and the list filter before any I/O', async () => {
    // The cluster has no server behind it: each call fails on its input, before it would connect.
    const ops = createSchemaOps({ cluster, tenants: schemaPerTenant({ cluster }) });
    const refused = (what: string) => ({
      code: 'SCHEMAOPS_INVALID_INPUT',
      message: expect.stringContaining(what),
    });
    await expect(
      ops.run({ project: 'p', type: 't', request: {}, idempotency: 'k' } as never),
    ).rejects.toMatchObject(refused('idempotency: unknown option'));
    await expect(
      ops.reconcile('00000000-0000-4000-8000-000000000000', { lockWait: 1 } as never),
    ).rejects.toMatchObject(refused('lockWait: unknown option'));
    await expect(ops.list({ status: ['failed'] } as never)).rejects.toMatchObject(
      refused('status: unknown option'),
    );
    await expect(ops.list({ statuses: ['done'] as never })).rejects.toMatchObject(refused('"applying"'));
    await expect(ops.list({ limit: 0 })).rejects.toMatchObject(refused('limit'));
    await ops.close();
  });
});

describe('errors', () => {
  it('one class, stable package-prefixed codes, retryable, details and cause', () => {
    const cause = new Error('boom');
    const e = new SchemaOpsError('SCHEMAOPS_LOCKED', 'locked', {
      retryable: true,
      details: { project: 'p' },
      cause,
    });
    expect(e.name).toBe('SchemaOpsError');
    expect(e).toBeInstanceOf(SchemaOpsError);
    expect(e).toBeInstanceOf(CodedError);
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      name: 'SchemaOpsError',
      code: 'SCHEMAOPS_LOCKED',
      retryable: true,
      details: { project: 'p' },
    });
    expect(e.retryable).toBe(true);
    expect(e.cause).toBe(cause);
    expect(isSchemaOpsError(e)).toBe(true);
    expect(isSchemaOpsError(e, 'SCHEMAOPS_LOCKED')).toBe(true);
    expect(isSchemaOpsError(e, 'SCHEMAOPS_CLOSED')).toBe(false);
    expect(isSchemaOpsError(new Error('x'))).toBe(false);
    // Recognised by shape, not instanceof (another copy of the package).
    expect(isSchemaOpsError({ name: 'SchemaOpsError', code: 'SCHEMAOPS_LOCKED' })).toBe(true);
    expect(SCHEMAOPS_ERROR_CODES.every((c) => c.startsWith('SCHEMAOPS_'))).toBe(true);
    expect(new Set(SCHEMAOPS_ERROR_CODES).size).toBe(SCHEMAOPS_ERROR_CODES.length);
    expect(SCHEMAOPS_ERROR_CODES).toEqual(
      expect.arrayContaining([
        'SCHEMAOPS_LOCKED',
        'SCHEMAOPS_STEP_FAILED',
        'SCHEMAOPS_COMPENSATION_FAILED',
        'SCHEMAOPS_INVALID_OPTIONS',
      ]),
    );
  });
});

describe('request hashing', () => {
  it('ignores key order and undefined members, distinguishes everything else', () => {
    expect(stableJson({ b: 1, a: [1, { d: 2, c: undefined }] })).toBe('{"a":[1,{"d":2}],"b":1}');
    const h = requestHash('t', { a: 1, b: 2 }, false);
    expect(requestHash('t', { b: 2, a: 1 }, false)).toBe(h);
    expect(requestHash('t', { a: 1, b: 3 }, false)).not.toBe(h);
    expect(requestHash('u', { a: 1, b: 2 }, false)).not.toBe(h);
    expect(requestHash('t', { a: 1, b: 2 }, true)).not.toBe(h);
  });
});

describe('physicalDdlRequired', () => {
  it('is carried through AsyncLocalStorage across awaits and is false outside a scope', async () => {
    expect(physicalDdlRequired()).toBe(false);
    const seen = await withPhysicalDdlRequired(true, async () => {
      await new Promise((r) => setImmediate(r));
      const inner = withPhysicalDdlRequired(false, () => physicalDdlRequired());
      return [physicalDdlRequired(), inner];
    });
    expect(seen).toEqual([true, false]);
    expect(physicalDdlRequired()).toBe(false);
  });
});

describe('reconcile backoff', () => {
  it('grows exponentially, is capped, and jitters within [50%, 150%)', () => {
    for (let i = 0; i < 200; i++) {
      const a2 = reconcileBackoffMs(2, 100, 10_000);
      expect(a2).toBeGreaterThanOrEqual(100);
      expect(a2).toBeLessThan(300);
      const a10 = reconcileBackoffMs(10, 100, 1_000);
      expect(a10).toBeGreaterThanOrEqual(500);
      expect(a10).toBeLessThan(1_500);
    }
  });
});
