import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { parseOptions } from '../internal/options.js';
import { externalReplicaUrls, type PgCluster, startPostgres, waitForReplay } from './cluster.js';
import { quoteIdent, urlWithDatabase, withClient } from './sql.js';

/** What the vitest globalSetup provides to every test of a project that needs PostgreSQL. */
export interface SharedPgContext {
  readonly primaryUrl: string;
  readonly replicaUrls: readonly string[];
  readonly external: boolean;
  /** The database every test database is cloned from. */
  readonly template: string;
  /** Part of every test database name of this run, so the run can drop what tests left behind. */
  readonly runId: string;
}

/** The `provide`/`inject` key of the shared cluster. */
export const SHARED_PG_KEY = 'xTestkitPostgres';
export const TEMPLATE_DATABASE = 'x_testkit_template';
/** Replicas of the shared per-run cluster (fewer when DATABASE_REPLICA_URLS lists fewer). */
export const SHARED_REPLICAS = 2;
export const DEFAULT_TEST_DATABASE_PREFIX = 'test';
export const DEFAULT_REPLICA_WAIT_MS = 30_000;

declare module 'vitest' {
  export interface ProvidedContext {
    xTestkitPostgres: SharedPgContext | undefined;
  }
}

interface SharedState {
  cluster: Promise<{ cluster: PgCluster; context: SharedPgContext }> | undefined;
  refs: number;
}

// On globalThis, not module scope: vitest loads the global setup once per project (separate module
// instances), and every project that needs PostgreSQL must share the one cluster of the run.
const STATE_KEY = Symbol.for('x-testkit.shared-postgres');
function state(): SharedState {
  const g = globalThis as { [STATE_KEY]?: SharedState };
  g[STATE_KEY] ??= { cluster: undefined, refs: 0 };
  return g[STATE_KEY];
}

async function ensureTemplate(primaryUrl: string): Promise<void> {
  await withClient(primaryUrl, async (c) => {
    const found = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [TEMPLATE_DATABASE]);
    if (found.rowCount) return;
    try {
      await c.query(`CREATE DATABASE ${quoteIdent(TEMPLATE_DATABASE)} TEMPLATE template0 ENCODING 'UTF8'`);
    } catch (e) {
      if ((e as { code?: string }).code !== '42P04') throw e; // created concurrently
    }
    // Nobody connects to the template, so cloning it never fails with "being accessed by other users".
    await c
      .query(`ALTER DATABASE ${quoteIdent(TEMPLATE_DATABASE)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`)
      .catch(() => undefined);
  });
}

/**
 * Starts (or joins) the cluster shared by the whole run: an embedded primary and two replicas, or
 * DATABASE_URL with up to two of DATABASE_REPLICA_URLS. Each call must be paired with
 * `releaseSharedPostgres()`; the last release stops it.
 */
export async function acquireSharedPostgres(): Promise<SharedPgContext> {
  const s = state();
  s.refs++;
  s.cluster ??= (async () => {
    const external = Boolean(process.env.DATABASE_URL);
    const replicas = external ? Math.min(SHARED_REPLICAS, externalReplicaUrls().length) : SHARED_REPLICAS;
    const cluster = await startPostgres({ replicas });
    try {
      await ensureTemplate(cluster.primary.url);
      await cluster.waitForReplicas();
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    const context: SharedPgContext = Object.freeze({
      primaryUrl: cluster.primary.url,
      replicaUrls: Object.freeze(cluster.replicas.map((r) => r.url)),
      external: cluster.external,
      template: TEMPLATE_DATABASE,
      runId: randomBytes(3).toString('hex'),
    });
    return { cluster, context };
  })();
  try {
    return (await s.cluster).context;
  } catch (e) {
    s.refs--;
    s.cluster = undefined;
    throw e;
  }
}

export async function releaseSharedPostgres(): Promise<void> {
  const s = state();
  if (s.refs === 0) return;
  s.refs--;
  if (s.refs > 0 || !s.cluster) return;
  const pending = s.cluster;
  s.cluster = undefined;
  const { cluster, context } = await pending;
  // An embedded cluster goes away whole; on an external server, drop the databases of this run that
  // tests did not drop themselves.
  if (cluster.external) await dropRunDatabases(context).catch(() => undefined);
  await cluster.stop();
}

async function dropRunDatabases(ctx: SharedPgContext): Promise<void> {
  await withClient(ctx.primaryUrl, async (c) => {
    const { rows } = await c.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE datname LIKE '%\\_' || $1 || '\\_%' AND NOT datistemplate",
      [ctx.runId],
    );
    for (const { datname } of rows) {
      if (new RegExp(`_${ctx.runId}_[0-9a-f]{8}$`).test(datname)) {
        await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(datname)} WITH (FORCE)`);
      }
    }
  });
}

/**
 * The shared cluster of this run: the one provided by the vitest globalSetup when there is one,
 * otherwise one started lazily in this process (stopped when the process exits).
 */
export async function sharedPostgres(): Promise<SharedPgContext> {
  if ((globalThis as { __vitest_worker__?: unknown }).__vitest_worker__) {
    try {
      const { inject } = await import('vitest');
      const provided = inject(SHARED_PG_KEY);
      if (provided) return provided;
    } catch {
      // not inside a vitest test: fall through
    }
  }
  const s = state();
  if (s.cluster) return (await s.cluster).context;
  return acquireSharedPostgres();
}

export interface TestDatabase {
  readonly name: string;
  /** The database on the primary. */
  readonly url: string;
  /** The same database on each replica (physical replication). */
  readonly replicaUrls: readonly string[];
  /** Drops it everywhere (WITH (FORCE): open connections are terminated); idempotent. */
  drop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface CreateTestDatabaseOptions {
  /** Start of the database name (letters, digits, `_`). Default `test`. */
  prefix?: string;
  signal?: AbortSignal;
}

const createTestDatabaseOptions = z.strictObject({
  // Any text; lower-cased, other characters than letters, digits and _ become _.
  prefix: z
    .string()
    .min(1)
    .max(40)
    .transform((p) => p.toLowerCase().replace(/[^a-z0-9_]/g, '_'))
    .default(DEFAULT_TEST_DATABASE_PREFIX),
  signal: z.instanceof(AbortSignal).optional(),
});

/**
 * A fresh database on the shared cluster, cloned from the template; it is on every replica when
 * this resolves. Drop it when the test file is done (`afterAll(() => db.drop())` or `await using`).
 */
export async function createTestDatabase(opts: CreateTestDatabaseOptions = {}): Promise<TestDatabase> {
  const { prefix, signal } = parseOptions(createTestDatabaseOptions, opts, 'createTestDatabase');
  const ctx = await sharedPostgres();
  const name = `${prefix}_${ctx.runId}_${randomBytes(4).toString('hex')}`;
  await withClient(
    ctx.primaryUrl,
    (c) => c.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE ${quoteIdent(ctx.template)}`),
    { signal },
  );
  const replicas = ctx.replicaUrls.map((url, i) => ({ name: `replica${i + 1}`, url }));
  await waitForReplay(ctx.primaryUrl, replicas, DEFAULT_REPLICA_WAIT_MS, signal);
  let dropping: Promise<void> | undefined;
  const drop = () => {
    dropping ??= withClient(ctx.primaryUrl, async (c) => {
      await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    });
    return dropping;
  };
  return Object.freeze({
    name,
    url: urlWithDatabase(ctx.primaryUrl, name),
    replicaUrls: Object.freeze(ctx.replicaUrls.map((u) => urlWithDatabase(u, name))),
    drop,
    [Symbol.asyncDispose]: drop,
  });
}

const warned = new Set<string>();

/**
 * Why a test needing `n` replicas cannot run here, or undefined when it can. Only on an external
 * server (DATABASE_URL) without enough DATABASE_REPLICA_URLS; the embedded cluster always has them.
 * Use with `test.skipIf(reason)` or `ctx.skip(reason)`; the reason is also printed once.
 */
export function requireReplicas(n: number): string | undefined {
  if (!process.env.DATABASE_URL) return undefined;
  const available = externalReplicaUrls().length;
  if (available >= n) return undefined;
  const reason = `needs ${n} PostgreSQL replica(s): DATABASE_URL is set but DATABASE_REPLICA_URLS lists ${available}; unset DATABASE_URL to use the embedded cluster, or list replica URLs`;
  if (!warned.has(reason)) {
    warned.add(reason);
    console.warn(`[@x/testkit] skipped: ${reason}`);
  }
  return reason;
}

/**
 * Why a test that kills, stops or restarts nodes should not use `startPostgres()` defaults here, or
 * undefined: on DATABASE_URL the nodes are external. Such tests can pass `{ embedded: true }` instead.
 */
export function requireEmbedded(): string | undefined {
  if (!process.env.DATABASE_URL) return undefined;
  return 'needs process control of PostgreSQL nodes, but DATABASE_URL points at an external server (use startPostgres({ embedded: true }))';
}
