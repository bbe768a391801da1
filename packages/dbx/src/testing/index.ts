/**
 * `@x/dbx/testing`: helpers for users' own tests against a real PostgreSQL (never a fake). It depends
 * only on `@x/dbx` and pg; vitest is used when present (to skip and to clean up), never required.
 */
import pg from 'pg';
import { createCluster } from '../cluster.js';
import { DbxError } from '../errors.js';
import { errorMessage, withTimeout } from '../internal/util.js';
import type { ClusterOptions } from '../options.js';
import type { Cluster, Tx, TxOptions } from '../types.js';

/**
 * Options of {@link createTestCluster}: where the server is, how long to probe it, how to skip and
 * clean up, and any `createCluster` option but `primary` and `replicas`.
 */
export interface TestClusterOptions extends Omit<ClusterOptions, 'primary' | 'replicas'> {
  /** Default: `process.env.DATABASE_URL`. */
  primaryUrl?: string;
  /** Default: `process.env.DATABASE_REPLICA_URLS` (comma-separated), else none. */
  replicaUrls?: readonly string[];
  /** How long to wait for the server before skipping. Default 3000 ms. */
  probeTimeoutMs?: number;
  /**
   * Skips the calling test. Default: vitest's `context.skip` for the running test; outside a vitest
   * test, the helper throws DBX_CONNECTION_FAILED with the same message instead.
   */
  skip?: (reason: string) => void;
  /** Registers the cluster's close. Default: vitest's `onTestFinished` when called inside a test; `false` = caller closes. */
  onCleanup?: ((close: () => Promise<void>) => void) | false;
}

interface VitestLike {
  onTestFinished(fn: () => unknown): void;
  TestRunner?: { getCurrentTest(): { context?: { skip(note?: string): never } } | undefined };
}

async function loadVitest(): Promise<VitestLike | null> {
  const name = 'vitest';
  try {
    return (await import(name)) as VitestLike;
  } catch {
    return null;
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return 'the configured server';
  }
}

/**
 * A cluster for one test: skips the test with a clear message when the server is unreachable, and
 * closes the cluster when the test finishes.
 *
 * @example
 * ```ts
 * import { createTestCluster } from '@x/dbx/testing';
 * import { expect, test } from 'vitest';
 *
 * // DATABASE_URL unset or the server down: the test is skipped, saying why.
 * test('the server speaks SQL', async () => {
 *   const db = await createTestCluster(); // closed when the test finishes
 *   expect(await db.queryRow('select 1 + 1 as two')).toEqual({ two: 2 });
 * });
 * ```
 */
export async function createTestCluster(opts: TestClusterOptions = {}): Promise<Cluster> {
  const { primaryUrl, replicaUrls, probeTimeoutMs = 3_000, skip, onCleanup, ...clusterOptions } = opts;
  const vitest = await loadVitest();
  const current = vitest?.TestRunner?.getCurrentTest();
  const doSkip = (reason: string): never => {
    if (skip) skip(reason);
    else if (current?.context) current.context.skip(reason);
    throw new DbxError('DBX_CONNECTION_FAILED', reason);
  };
  const url = primaryUrl ?? process.env.DATABASE_URL;
  if (!url) return doSkip('@x/dbx/testing: no PostgreSQL configured (set DATABASE_URL or pass primaryUrl)');
  const replicas =
    replicaUrls ??
    (process.env.DATABASE_REPLICA_URLS ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  for (const u of [url, ...replicas]) {
    const client = new pg.Client({ connectionString: u, connectionTimeoutMillis: probeTimeoutMs });
    client.on('error', () => {});
    try {
      await withTimeout(
        client.connect().then(() => client.query('select 1')),
        probeTimeoutMs,
        () => new Error(`no answer within ${probeTimeoutMs} ms`),
      );
    } catch (e) {
      return doSkip(`@x/dbx/testing: PostgreSQL at ${redact(u)} is unreachable: ${errorMessage(e)}`);
    } finally {
      client.end().catch(() => {});
    }
  }
  const cluster = createCluster({ ...clusterOptions, primary: url, replicas: [...replicas] });
  const close = () => cluster.close();
  if (onCleanup) onCleanup(close);
  else if (onCleanup !== false && current && vitest) vitest.onTestFinished(close);
  return cluster;
}

const ROLLBACK = Symbol('dbx.testing.rollback');

/**
 * Runs `fn` in a transaction that is always rolled back, so a test leaves no trace. Inside `fn`,
 * `currentQuerier()` returns the transaction. Resolves with what `fn` returned; it is run once (no
 * retry on a serialization failure).
 *
 * @example
 * ```ts
 * import { createTestCluster, runInTx } from '@x/dbx/testing';
 * import { expect, test } from 'vitest';
 *
 * test('adding a todo inserts one row', async () => {
 *   const db = await createTestCluster();
 *   await db.exec('create table if not exists todos (id int primary key, title text not null)');
 *   const inserted = await runInTx(db, async (tx) => {
 *     await tx.exec('insert into todos values ($1, $2)', [42, 'write docs']);
 *     return tx.queryRow('select count(*)::int as n from todos where id = 42');
 *   });
 *   expect(inserted).toEqual({ n: 1 });
 *   expect(await db.queryRow('select count(*)::int as n from todos where id = 42')).toEqual({ n: 0 }); // rolled back
 * });
 * ```
 */
export async function runInTx<T>(
  cluster: Cluster,
  fn: (tx: Tx) => Promise<T>,
  opts?: Omit<TxOptions, 'maxAttempts'>,
): Promise<T> {
  let result: T | undefined;
  try {
    await cluster.runTx(
      async (tx) => {
        result = await fn(tx);
        throw ROLLBACK;
      },
      { ...opts, maxAttempts: 1 },
    );
  } catch (e) {
    if (e !== ROLLBACK) throw e;
  }
  return result as T;
}
