import { type Cluster, type ClusterOptions, createCluster, type Tx } from '@x/dbx';
import { z } from 'zod';
import { SchemaOpsError } from './errors.js';
import { clusterSchema, invalidOptions } from './internal/option-schemas.js';
import { quoteIdent } from './internal/sql.js';
import type { DdlTarget } from './types.js';

/**
 * Where an operation's DDL lands: the base project target and the list of tenants, each reached in a
 * transaction of its own. Two built-ins: `schemaPerTenant` (one database, a schema per tenant) and
 * `databasePerTenant` (a database per tenant, each reached by its own dbx cluster). Anything else
 * (a sharded layout, say) implements this interface.
 */
export interface TenantSource {
  readonly kind: string;
  /** The tenants of a project, in a stable order. Recorded in the ledger when an operation starts. */
  list(project: string, opts?: { signal?: AbortSignal }): Promise<readonly string[]>;
  /** Whether the project has a base target (otherwise operations must set `skipBaseDdl`). */
  hasBase(project: string): boolean;
  /**
   * Runs `fn` in a transaction on the target; `schema` is the schema it is scoped to, if any. When
   * `opts.firstStatement` is given the source must run it in that transaction before `fn` (schemaops
   * passes its ledger record there, so DDL and record commit together); a source may fold it into its
   * own setup statement to save a round trip.
   */
  withTarget<T>(
    project: string,
    target: DdlTarget,
    fn: (tx: Tx, schema: string | null) => Promise<T>,
    opts?: WithTargetOptions,
  ): Promise<T>;
  /**
   * Optional: runs plain SQL text (no parameters) on the target as one transaction, in as few round
   * trips as the source can — the built-in sources send `opts.firstStatement`, their own setup and
   * `sql(schema)` as one multi-statement query, which PostgreSQL runs as one implicit transaction.
   * `firstStatement` then has no parameters. Without it, schemaops runs the text through `withTarget`.
   */
  execSql?(
    project: string,
    target: DdlTarget,
    sql: (schema: string | null) => string,
    opts?: WithTargetOptions,
  ): Promise<void>;
  /**
   * True when the target's transactions run on `cluster` (the ledger's): schemaops then records a
   * tenant's step inside the tenant's own transaction, so DDL and ledger commit together.
   */
  sharesCluster(cluster: Cluster, project: string, target: DdlTarget): boolean;
  /** Releases what the source opened itself (clusters it made from URLs); never what it was given. */
  close(): Promise<void>;
  /** Same as `close()`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The options of {@link TenantSource.withTarget} and {@link TenantSource.execSql}. */
export interface WithTargetOptions {
  /** Aborts the target's transaction. */
  signal?: AbortSignal;
  /** A statement the source must run first in the target's transaction (schemaops' ledger record). */
  firstStatement?: { sql: string; params: readonly unknown[] };
}

type TenantLister = (project: string, opts: { signal?: AbortSignal }) => Promise<readonly string[]>;

/**
 * The default `tenantSchemaPrefix` of {@link schemaPerTenant}: a project's tenants are the schemas
 * named `<project>_tenant_*`.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { DEFAULT_TENANT_SCHEMA_PREFIX, schemaPerTenant } from '@x/schemaops';
 *
 * console.log(DEFAULT_TENANT_SCHEMA_PREFIX('shop')); // shop_tenant_
 * // The default for every project but one that was set up with another naming scheme:
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const tenants = schemaPerTenant({
 *   cluster: db,
 *   tenantSchemaPrefix: (project) => (project === 'legacy' ? 'legacy_t' : DEFAULT_TENANT_SCHEMA_PREFIX(project)),
 * });
 * console.log(tenants.kind); // schema
 * await db.close();
 * ```
 */
export const DEFAULT_TENANT_SCHEMA_PREFIX = (project: string): string => `${project}_tenant_`;
/**
 * The default `baseSchema` of {@link schemaPerTenant}: a project's base schema is named after it.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { DEFAULT_BASE_SCHEMA, schemaPerTenant } from '@x/schemaops';
 *
 * console.log(DEFAULT_BASE_SCHEMA('shop')); // shop
 * // Sandbox projects have tenants only; the rest keep the default base schema.
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * const tenants = schemaPerTenant({
 *   cluster: db,
 *   baseSchema: (project) => (project.startsWith('sandbox') ? null : DEFAULT_BASE_SCHEMA(project)),
 * });
 * console.log(tenants.hasBase('sandbox_1'), tenants.hasBase('shop')); // false true
 * await db.close();
 * ```
 */
export const DEFAULT_BASE_SCHEMA = (project: string): string | null => project;

/** The options of {@link schemaPerTenant}. */
export interface SchemaPerTenantOptions {
  /** The one database's `@x/dbx` cluster: every target's transaction runs on it. */
  cluster: Cluster;
  /** The tenants (schema names) of a project. Default: every schema starting with `tenantSchemaPrefix(project)`. */
  listTenants?: TenantLister;
  /** Default `DEFAULT_TENANT_SCHEMA_PREFIX`: `<project>_tenant_`. */
  tenantSchemaPrefix?: (project: string) => string;
  /** The base project's schema, or null for none. Default `DEFAULT_BASE_SCHEMA`: the project name. */
  baseSchema?: (project: string) => string | null;
}

const fn = <T>(msg: string) => z.custom<T>((v) => typeof v === 'function', { message: msg });

function parse<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const r = schema.safeParse(input);
  if (!r.success) throw invalidOptions(`${what} options`, r.error);
  return r.data;
}

const schemaPerTenantSchema = z.strictObject({
  cluster: clusterSchema,
  listTenants: fn<TenantLister>('listTenants must be a function').optional(),
  tenantSchemaPrefix: fn<(p: string) => string>('tenantSchemaPrefix must be a function').optional(),
  baseSchema: fn<(p: string) => string | null>('baseSchema must be a function').optional(),
});

/** `set local search_path` to the target schema, then the parameterless first statement, if any. */
function setupSql(schema: string, first: WithTargetOptions['firstStatement']): string {
  const set = `set local search_path to ${quoteIdent(schema)}`;
  return first ? `${set};\n${first.sql}` : set;
}

function signalOpt(opts: WithTargetOptions): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}

/**
 * Schema-per-tenant: one database; tenant = a schema; DDL runs with `search_path` set to it. By
 * default a project's base schema is the project name and its tenants are the schemas named
 * `<project>_tenant_*`. No I/O happens here; the source is closed with the cluster (its `close()`
 * does nothing).
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { schemaPerTenant } from '@x/schemaops';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create schema if not exists shop; create schema if not exists shop_tenant_a; create schema if not exists shop_tenant_b');
 * const tenants = schemaPerTenant({ cluster: db });
 * console.log(await tenants.list('shop')); // [ 'shop_tenant_a', 'shop_tenant_b' ]
 * const where = await tenants.withTarget('shop', { kind: 'tenant', tenant: 'shop_tenant_b' }, (tx) =>
 *   tx.queryRow('select current_schema() as schema'),
 * );
 * console.log(where); // { schema: 'shop_tenant_b' }
 * await db.close();
 * ```
 */
export function schemaPerTenant(options: SchemaPerTenantOptions): TenantSource {
  const o = parse(schemaPerTenantSchema, options, 'schemaPerTenant');
  const prefixOf = o.tenantSchemaPrefix ?? DEFAULT_TENANT_SCHEMA_PREFIX;
  const baseOf = o.baseSchema ?? DEFAULT_BASE_SCHEMA;
  const cluster = o.cluster;
  const list: TenantLister =
    o.listTenants ??
    (async (project, { signal }) => {
      const prefix = prefixOf(project);
      if (prefix.length === 0) throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'empty tenant prefix');
      const r = await cluster.query<{ nspname: string }>(
        'select nspname from pg_namespace where starts_with(nspname, $1) order by nspname',
        [prefix],
        signal ? { signal } : {},
      );
      return r.rows.map((row) => row.nspname);
    });
  const schemaOf = (project: string, target: DdlTarget): string => {
    if (target.kind === 'tenant') return target.tenant;
    const base = baseOf(project);
    if (base === null) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'this project has no base schema', {
        details: { project },
      });
    }
    return base;
  };
  const withTarget = <T>(
    project: string,
    target: DdlTarget,
    body: (tx: Tx, schema: string | null) => Promise<T>,
    opts: WithTargetOptions = {},
  ): Promise<T> => {
    const schema = schemaOf(project, target);
    const first = opts.firstStatement;
    return cluster.runTx(async (tx) => {
      if (first && first.params.length > 0) {
        // One round trip for both: a data-modifying CTE always runs to completion.
        await tx.exec(
          `with first as (${first.sql}) select set_config('search_path', $${first.params.length + 1}, true)`,
          [...first.params, quoteIdent(schema)],
        );
      } else {
        // Without parameters both go as one simple query (no parse/bind/describe, no CTE to plan).
        await tx.exec(setupSql(schema, first));
      }
      return body(tx, schema);
    }, signalOpt(opts));
  };
  return Object.freeze({
    kind: 'schema',
    list: (project: string, opts: { signal?: AbortSignal } = {}) => list(project, opts),
    hasBase: (project: string) => baseOf(project) !== null,
    withTarget,
    async execSql(
      project: string,
      target: DdlTarget,
      sql: (schema: string | null) => string,
      opts: WithTargetOptions = {},
    ): Promise<void> {
      const schema = schemaOf(project, target);
      const first = opts.firstStatement;
      if (first && first.params.length > 0) {
        await withTarget(project, target, (tx) => tx.exec(sql(schema)), opts);
        return;
      }
      // One round trip: a multi-statement query is one implicit transaction (SET LOCAL holds to its end).
      await cluster.exec(`${setupSql(schema, first)};\n${sql(schema)}`, undefined, signalOpt(opts));
    },
    sharesCluster: (c: Cluster) => c === cluster,
    close: async () => {},
    [Symbol.asyncDispose]: async () => {},
  });
}

/**
 * How {@link databasePerTenant} reaches a database: a connection URL (the source opens, pools and
 * closes a cluster for it) or a `Cluster` of yours (never closed by the source).
 */
export type TenantConnection = string | Cluster;

/**
 * Default `maxOpenClusters` of {@link databasePerTenant} (16): clusters opened from URLs kept open at
 * once; idle ones beyond it are closed, least recently used first.
 */
export const DEFAULT_MAX_OPEN_CLUSTERS = 16;
/**
 * Default `pool.max` (2) of a cluster {@link databasePerTenant} opens from a URL: connections per
 * tenant database.
 */
export const DEFAULT_TENANT_POOL_MAX = 2;
/** Default `pool.idleTimeoutMs` of a cluster {@link databasePerTenant} opens from a URL (1,000 ms). */
export const DEFAULT_TENANT_POOL_IDLE_TIMEOUT_MS = 1_000;

/** The options of {@link databasePerTenant}. */
export interface DatabasePerTenantOptions {
  /** The tenants of a project (any stable ids). */
  listTenants: TenantLister;
  /** How to reach a tenant's database: a connection URL (the source opens and owns a cluster) or a Cluster (yours). */
  connect: (project: string, tenant: string) => TenantConnection;
  /** How to reach the base project's database, or null / omitted for none. */
  base?: (project: string) => TenantConnection | null;
  /** Clusters the source opened from URLs that it keeps open at once (idle ones beyond it are closed). Default 16. */
  maxOpenClusters?: number;
  /** Extra dbx options for clusters opened from URLs. Default pool `{ max: 2, idleTimeoutMs: 1000 }`. */
  clusterOptions?: Omit<ClusterOptions, 'primary'>;
}

const databasePerTenantSchema = z.strictObject({
  listTenants: fn<TenantLister>('listTenants must be a function'),
  connect: fn<(p: string, t: string) => TenantConnection>('connect must be a function'),
  base: fn<(p: string) => TenantConnection | null>('base must be a function').optional(),
  maxOpenClusters: z.number().int().positive().default(DEFAULT_MAX_OPEN_CLUSTERS),
  clusterOptions: z.record(z.string(), z.unknown()).optional(),
});

/**
 * `clusterOptions` are used only when a tenant's cluster is opened, long after construction: they are
 * checked now, by dbx itself (createCluster does no I/O; the probe is closed at once), so a typo or a
 * bad value is SCHEMAOPS_INVALID_OPTIONS here rather than a failure on some later tenant.
 */
function checkClusterOptions(
  given: Record<string, unknown> | undefined,
  optionsFor: (primary: string) => ClusterOptions,
): void {
  if (given === undefined) return;
  if ('primary' in given) {
    throw new SchemaOpsError(
      'SCHEMAOPS_INVALID_OPTIONS',
      'invalid databasePerTenant options: clusterOptions.primary: not allowed (each tenant connection is the primary)',
      { details: { key: 'clusterOptions.primary' } },
    );
  }
  let probe: Cluster;
  try {
    probe = createCluster(optionsFor('postgres://schemaops-probe@127.0.0.1:1/probe'));
  } catch (e) {
    throw new SchemaOpsError(
      'SCHEMAOPS_INVALID_OPTIONS',
      `invalid databasePerTenant options: clusterOptions: ${e instanceof Error ? e.message : String(e)}`,
      { details: { key: 'clusterOptions' }, cause: e },
    );
  }
  void probe.close();
}

interface OwnedCluster {
  cluster: Cluster;
  users: number;
  lastUsed: number;
}

/**
 * Database-per-tenant: tenant = a database reached by its own dbx cluster. A connection URL returned
 * by `connect` gets a cluster the source opens, pools and closes (`close()`); a Cluster stays yours.
 * No I/O happens here, but `clusterOptions` are checked at once.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { databasePerTenant } from '@x/schemaops';
 *
 * // The registry lives in the main database; each tenant has a database of its own (shop_a, shop_b).
 * const registry = createCluster({ primary: process.env.DATABASE_URL! });
 * await registry.exec('create table if not exists tenants (project text, db text, primary key (project, db))');
 * await registry.exec("insert into tenants values ('shop', 'shop_a'), ('shop', 'shop_b') on conflict do nothing");
 *
 * const tenants = databasePerTenant({
 *   listTenants: async (project) => {
 *     const { rows } = await registry.query<{ db: string }>('select db from tenants where project = $1 order by db', [project]);
 *     return rows.map((r) => r.db);
 *   },
 *   connect: (_project, tenant) => {
 *     const url = new URL(process.env.DATABASE_URL!);
 *     url.pathname = `/${tenant}`;
 *     return url.toString(); // the source opens (and closes) a small cluster per tenant database
 *   },
 *   base: () => registry, // the project's base DDL runs in the registry's database
 *   maxOpenClusters: 32,
 * });
 * console.log(await tenants.list('shop')); // [ 'shop_a', 'shop_b' ]
 * const where = await tenants.withTarget('shop', { kind: 'tenant', tenant: 'shop_b' }, (tx) =>
 *   tx.queryRow('select current_database() as db'),
 * );
 * console.log(where); // { db: 'shop_b' }
 * await tenants.close(); // closes the clusters it opened, not the registry
 * await registry.close();
 * ```
 */
export function databasePerTenant(options: DatabasePerTenantOptions): TenantSource {
  const o = parse(databasePerTenantSchema, options, 'databasePerTenant');
  const owned = new Map<string, OwnedCluster>();
  let closed = false;
  const extra = (o.clusterOptions ?? {}) as Omit<ClusterOptions, 'primary'>;
  const clusterOptionsFor = (primary: string): ClusterOptions => ({
    ...extra,
    pool: {
      max: DEFAULT_TENANT_POOL_MAX,
      idleTimeoutMs: DEFAULT_TENANT_POOL_IDLE_TIMEOUT_MS,
      ...(extra.pool ?? {}),
    },
    primary,
  });
  checkClusterOptions(o.clusterOptions, clusterOptionsFor);

  const connectionOf = (project: string, target: DdlTarget): TenantConnection => {
    if (target.kind === 'tenant') return o.connect(project, target.tenant);
    const base = o.base?.(project) ?? null;
    if (base === null) {
      throw new SchemaOpsError('SCHEMAOPS_INVALID_INPUT', 'this project has no base database', {
        details: { project },
      });
    }
    return base;
  };

  const evictIdle = (): void => {
    if (owned.size <= o.maxOpenClusters) return;
    const idle = [...owned.entries()]
      .filter(([, c]) => c.users === 0)
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [url, c] of idle) {
      if (owned.size <= o.maxOpenClusters) break;
      owned.delete(url);
      void c.cluster.close().catch(() => {});
    }
  };

  const acquire = (conn: TenantConnection): { cluster: Cluster; release: () => void } => {
    if (typeof conn !== 'string') return { cluster: conn, release: () => {} };
    if (closed) throw new SchemaOpsError('SCHEMAOPS_CLOSED', 'the tenant source is closed');
    let entry = owned.get(conn);
    if (!entry) {
      entry = {
        cluster: createCluster(clusterOptionsFor(conn)),
        users: 0,
        lastUsed: 0,
      };
      owned.set(conn, entry);
    }
    const e = entry;
    e.users++;
    return {
      cluster: e.cluster,
      release: () => {
        e.users--;
        e.lastUsed = Date.now();
        evictIdle();
      },
    };
  };

  const close = async (): Promise<void> => {
    closed = true;
    const all = [...owned.values()];
    owned.clear();
    await Promise.allSettled(all.map((c) => c.cluster.close()));
  };

  const withTarget = async <T>(
    project: string,
    target: DdlTarget,
    body: (tx: Tx, schema: string | null) => Promise<T>,
    opts: WithTargetOptions = {},
  ): Promise<T> => {
    const { cluster, release } = acquire(connectionOf(project, target));
    const first = opts.firstStatement;
    try {
      return await cluster.runTx(async (tx) => {
        if (first) await tx.exec(first.sql, first.params);
        return body(tx, null);
      }, signalOpt(opts));
    } finally {
      release();
    }
  };

  return Object.freeze({
    kind: 'database',
    list: (project: string, opts: { signal?: AbortSignal } = {}) => o.listTenants(project, opts),
    hasBase: (project: string) => (o.base?.(project) ?? null) !== null,
    withTarget,
    async execSql(
      project: string,
      target: DdlTarget,
      sql: (schema: string | null) => string,
      opts: WithTargetOptions = {},
    ): Promise<void> {
      const first = opts.firstStatement;
      if (first && first.params.length > 0) {
        await withTarget(project, target, (tx) => tx.exec(sql(null)), opts);
        return;
      }
      const { cluster, release } = acquire(connectionOf(project, target));
      try {
        // One round trip: a multi-statement query is one implicit transaction.
        await cluster.exec(first ? `${first.sql};\n${sql(null)}` : sql(null), undefined, signalOpt(opts));
      } finally {
        release();
      }
    },
    sharesCluster(c: Cluster, project: string, target: DdlTarget): boolean {
      return connectionOf(project, target) === c;
    },
    close,
    [Symbol.asyncDispose]: close,
  });
}
