/**
 * The demo server: fastify + the `@x/oversync` server plugin over an `@x/dbx` cluster (a primary and
 * its streaming replicas), business tables created per tenant by `@x/schemaops`, HS256 JWT auth.
 * What it checks before it starts is in server-preflight.ts; the reference profile's test-only
 * routes are in reference-routes.ts.
 */
import { type Cluster, createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin, type SyncService } from '@x/oversync/server';
import { type PgCluster, startPostgres } from '@x/testkit';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { redactUrl } from './args.js';
import { DEFAULT_HOST, DEFAULT_PORT } from './defaults.js';
import { causeLine, DemoError, type DemoErrorCode, isDemoError } from './errors.js';
import { signJwt, verifyJwt } from './jwt.js';
import type { KeptPostgres } from './kept-postgres.js';
import type { Profile } from './profiles.js';
import { mountReferenceTestRoutes } from './reference-routes.js';
import { checkPortFree, checkReachable, listenError, resolveServerStart } from './server-preflight.js';
import { type LedgerEntry, provisionTenants, type TenantProvisioning } from './tenants.js';

export { DEFAULT_HOST, DEFAULT_PORT } from './defaults.js';
export { resolveServerStart };
/** Response header carrying the dbx read-your-writes token of a request's writes. */
export const WRITE_TOKEN_HEADER = 'x-demo-write-token';
/** Lifetime of tokens minted by `/dummy-signin` (the reference example uses 5 minutes). */
export const SIGNIN_TOKEN_TTL_SECONDS = 300;

export interface DemoServerOptions {
  databaseUrl?: string | undefined;
  replicaUrls?: readonly string[] | undefined;
  /** Embedded PostgreSQL only: keep its data directory here (a primary, no replica) and reuse it. */
  dataDir?: string | undefined;
  port?: number | undefined;
  host?: string | undefined;
  profile: Profile;
  secret: string;
  log?: ((line: string) => void) | undefined;
}

export interface DemoServer {
  readonly url: string;
  readonly port: number;
  readonly cluster: Cluster;
  readonly service: SyncService;
  readonly profile: Profile;
  readonly postgres: PgCluster | null;
  /** The embedded primary kept in `dataDir`, when that option was given. */
  readonly keptPostgres: KeptPostgres | null;
  /** The primary's connection string (with credentials when embedded) and the replicas'. */
  readonly databaseUrls: { readonly primary: string; readonly replicas: readonly string[] };
  /** Lines for people: the HTTP URLs, the PostgreSQL connection strings, where the data lives. */
  describe(): string[];
  readonly provisioning: TenantProvisioning;
  readonly app: FastifyInstance;
  /** Rows of one user's scope in every registered table, read through dbx (replica when caught up). */
  userRows(userId: string, token?: string | null): Promise<UserRows>;
  status(): Promise<DemoStatus>;
  /** Stops intake (fastify), then the sync service, schemaops, the dbx cluster and embedded PostgreSQL. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface UserRows {
  tables: Record<string, Array<Record<string, unknown>>>;
  /** Which node class answered: 'replica' when dbx could use one under read-your-writes. */
  servedBy: 'replica' | 'primary';
}

export interface DemoStatus {
  profile: string;
  tenants: readonly string[];
  sync: unknown;
  ledger: LedgerEntry[];
  cluster: unknown;
  reads: { replica: number; primary: number };
}

declare module 'fastify' {
  interface FastifyRequest {
    demoUserId?: string;
  }
}

function bearer(req: FastifyRequest): string | null {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return null;
  const parts = h.split(' ');
  if (parts.length !== 2 || parts[0] !== 'Bearer' || parts[1] === '') return null;
  return parts[1] ?? null;
}

const signinSchema = z.object({
  user: z.string().optional(),
  password: z.string().optional(),
  device: z.string().optional(),
});

const serverOptionsSchema = z.object({
  databaseUrl: z.string().min(1).optional(),
  replicaUrls: z.array(z.string().min(1)).optional(),
  dataDir: z.string().min(1).optional(),
  port: z.number().int().min(0).max(65535).optional(),
  host: z.string().min(1).optional(),
  profile: z.custom<Profile>((v) => typeof v === 'object' && v !== null && 'tenantDdl' in v, 'a profile'),
  secret: z.string().min(1, 'the JWT secret must not be empty'),
  log: z.custom<(line: string) => void>((v) => typeof v === 'function').optional(),
});

export async function startDemoServer(options: DemoServerOptions): Promise<DemoServer> {
  const parsed = serverOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new DemoError('DEMO_INVALID_OPTIONS', `invalid server options: ${z.prettifyError(parsed.error)}`, {
      details: { issues: parsed.error.issues },
    });
  }
  const opts = options;
  const log = opts.log ?? (() => {});
  const profile = opts.profile;
  const host = opts.host ?? DEFAULT_HOST;
  const port = opts.port ?? DEFAULT_PORT;
  if (opts.dataDir !== undefined && opts.databaseUrl)
    throw new DemoError(
      'DEMO_CONFLICTING_FLAGS',
      '--data-dir keeps embedded PostgreSQL; it cannot go with --database-url',
    );
  // Before anything starts: the HTTP port must be free, and a given database must answer.
  await checkPortFree(host, port);
  let postgres: PgCluster | null = null;
  let kept: KeptPostgres | null = null;
  let primaryUrl = opts.databaseUrl;
  let replicaUrls = [...(opts.replicaUrls ?? [])];
  if (primaryUrl) {
    await checkReachable(primaryUrl, 'DEMO_DATABASE_UNREACHABLE', 'the database');
    for (const r of replicaUrls) await checkReachable(r, 'DEMO_REPLICA_UNREACHABLE', 'the replica');
  } else if (opts.dataDir !== undefined) {
    log(`starting embedded PostgreSQL kept in ${opts.dataDir} (a primary, no replica)…`);
    const t0 = Date.now();
    const { startKeptPostgres } = await import('./kept-postgres.js');
    kept = await startKeptPostgres(opts.dataDir);
    primaryUrl = kept.url;
    replicaUrls = [];
    log(
      `PostgreSQL ready in ${Date.now() - t0} ms (${kept.created ? 'new data directory' : 'reusing its data directory'})`,
    );
  } else {
    log('starting embedded PostgreSQL (a primary and one streaming replica)…');
    const t0 = Date.now();
    try {
      postgres = await startPostgres({ replicas: 1 });
    } catch (e) {
      throw new DemoError(
        'DEMO_POSTGRES_START_FAILED',
        `embedded PostgreSQL did not start: ${causeLine(e)}`,
        {
          cause: e,
        },
      );
    }
    primaryUrl = postgres.primary.url;
    replicaUrls = postgres.replicas.map((r) => r.url);
    log(`PostgreSQL ready in ${Date.now() - t0} ms`);
  }
  const embedded = postgres !== null || kept !== null;
  const databaseUrls = {
    primary: embedded ? primaryUrl : redactUrl(primaryUrl),
    replicas: replicaUrls.map((u) => (embedded ? u : redactUrl(u))),
  };
  const cluster = createCluster({ primary: primaryUrl, replicas: replicaUrls });
  // Undone last-in first-out: fastify, the sync service, schemaops, the cluster, then PostgreSQL.
  const cleanup: Array<() => Promise<void>> = [
    async () => {
      await postgres?.stop();
      await kept?.stop();
    },
    () => cluster.close(),
  ];
  const unwind = async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  };
  /** Names what failed: a DemoError passes through, anything else gets `code`. */
  const failed = (code: DemoErrorCode, what: string) => (e: unknown) => {
    throw isDemoError(e) ? e : new DemoError(code, `${what}: ${causeLine(e)}`, { cause: e });
  };
  try {
    const provisioning = await provisionTenants(cluster, profile, log).catch(
      failed('DEMO_BOOTSTRAP_FAILED', 'creating the business tables (schemaops) failed'),
    );
    cleanup.push(() => provisioning.close());
    const makeService = async (): Promise<SyncService> => {
      const svc = createSyncService({
        db: cluster,
        appName: profile.appName,
        maxSupportedSchemaVersion: 1,
        registeredTables: profile.tenants.flatMap((schema) =>
          profile.tables.map((t) => ({
            schema,
            table: t.table,
            syncKeyColumns: [...t.syncKeyColumns],
            backendWrites: t.backendWrites === true,
          })),
        ),
        bundleChangeWatch: { enabled: true },
      });
      await svc.bootstrap();
      return svc;
    };
    let current = await makeService().catch(
      failed('DEMO_BOOTSTRAP_FAILED', 'bootstrapping the sync service failed'),
    );
    cleanup.push(() => current.close());
    /** What the routes hold: always the current service (`/test/reset` replaces it). */
    const service = new Proxy({} as SyncService, {
      get: (_t, key) => {
        const v: unknown = Reflect.get(current, key);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(current) : v;
      },
    });
    const replaceService = async () => {
      const old = current;
      await old.close();
      current = await makeService();
    };
    log(
      `sync service bootstrapped: ${profile.tenants.length * profile.tables.length} registered tables in ${profile.tenants.join(', ')}`,
    );

    const reads = { replica: 0, primary: 0 };
    /** The newest write token per user: a later read of that user's rows must see them. */
    const lastToken = new Map<string, string>();

    const app = Fastify({ logger: false });
    cleanup.push(async () => {
      await app.close();
    });

    // Each request runs in a dbx session, so the token of its writes can be handed back.
    app.addHook('onRequest', (_req, _reply, done) => {
      void cluster.session(async () => done());
    });
    // Bearer auth for /sync/* and /demo/rows: HS256, sub = user id. Plain-text 401 as the reference.
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0] ?? '';
      if (!path.startsWith('/sync/') && path !== '/demo/rows') return;
      const token = bearer(req);
      if (token === null) {
        return reply.code(401).type('text/plain; charset=utf-8').send('Authorization header required\n');
      }
      try {
        req.demoUserId = (await verifyJwt(token, opts.secret)).sub;
      } catch {
        return reply.code(401).type('text/plain; charset=utf-8').send('Invalid token\n');
      }
    });
    app.addHook('onSend', async (req, reply, payload) => {
      const t = cluster.writeToken();
      if (t !== null) {
        reply.header(WRITE_TOKEN_HEADER, t);
        if (req.demoUserId) lastToken.set(req.demoUserId, t);
      }
      return payload;
    });

    await app.register(async (scope) => {
      await scope.register(oversyncFastifyPlugin, {
        service,
        userIdFromRequest: (req) => req.demoUserId,
      });
    });

    const userRows = async (userId: string, token?: string | null): Promise<UserRows> => {
      const before = replicaQueries(cluster);
      const t = token ?? lastToken.get(userId) ?? null;
      const tables: Record<string, Array<Record<string, unknown>>> = {};
      for (const schema of profile.tenants) {
        for (const { table } of profile.tables) {
          const r = await cluster.readQuery<Record<string, unknown>>(
            `SELECT to_jsonb(t) - '_sync_scope_id' AS row FROM "${schema}"."${table}" t
              WHERE _sync_scope_id = $1 ORDER BY id`,
            [userId],
            t === null ? {} : { token: t },
          );
          tables[`${schema}.${table}`] = r.rows.map((x) => x['row'] as Record<string, unknown>);
        }
      }
      const servedBy = replicaQueries(cluster) > before ? 'replica' : 'primary';
      reads[servedBy]++;
      return { tables, servedBy };
    };

    const status = async (): Promise<DemoStatus> => ({
      profile: profile.name,
      tenants: profile.tenants,
      sync: await service.status(),
      ledger: await provisioning.ledger(),
      cluster: cluster.stats(),
      reads: { ...reads },
    });

    // Reference example: any password, a 5-minute token with `sub` and `did`.
    if (profile.signInRoute) {
      app.post('/dummy-signin', async (req, reply) => {
        let body: unknown = req.body;
        if (typeof body === 'string') {
          try {
            body = JSON.parse(body);
          } catch {
            body = undefined;
          }
        }
        const parsed = signinSchema.safeParse(body);
        if (!parsed.success)
          return reply.code(400).send({ error: 'invalid_request', message: 'invalid JSON' });
        const user = parsed.data.user ?? '';
        if (user === '') return reply.code(400).send({ error: 'invalid_request', message: 'user required' });
        const device = parsed.data.device || `device-${Date.now().toString(36)}`;
        const token = await signJwt(opts.secret, {
          sub: user,
          did: device,
          iss: 'go-oversync',
          ttlSeconds: SIGNIN_TOKEN_TTL_SECONDS,
        });
        return reply.send({ token, expires_in: SIGNIN_TOKEN_TTL_SECONDS, user, device });
      });
    }
    if (profile.testRoutes)
      mountReferenceTestRoutes(app, cluster, replaceService, provisioning, profile, log);
    app.get('/demo/status', async () => status());
    app.get('/demo/rows', async (req) => {
      const h = req.headers[WRITE_TOKEN_HEADER];
      const token = typeof h === 'string' && h !== '' ? h : null;
      return userRows(req.demoUserId ?? '', token);
    });

    await app.listen({ port, host }).catch((e: unknown) => {
      throw listenError(e, host, port);
    });
    const addr = app.server.address();
    const boundPort = typeof addr === 'object' && addr !== null ? addr.port : 0;
    const url = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
    log(`oversync server (${profile.name} profile) listening on ${url}`);

    let closing: Promise<void> | null = null;
    const close = () => {
      closing ??= unwind();
      return closing;
    };
    const describe = () => [
      `HTTP      ${url}  (sync: ${url}/sync/*, health: ${url}/syncx/health, status: ${url}/demo/status)`,
      `postgres  primary ${databaseUrls.primary}`,
      ...databaseUrls.replicas.map((r) => `postgres  replica ${r}`),
      kept
        ? `data      kept in ${kept.dataDir} (reused by the next start with --data-dir ${kept.dataDir})`
        : postgres
          ? 'data      embedded PostgreSQL is removed on exit (keep it with --data-dir PATH)'
          : 'data      your database (nothing is removed on exit)',
    ];
    return {
      url,
      port: boundPort,
      cluster,
      service,
      profile,
      postgres,
      keptPostgres: kept,
      databaseUrls,
      describe,
      provisioning,
      app,
      userRows,
      status,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (e) {
    await unwind();
    throw isDemoError(e)
      ? e
      : new DemoError('DEMO_BOOTSTRAP_FAILED', `server start failed: ${causeLine(e)}`, { cause: e });
  }
}

function replicaQueries(cluster: Cluster): number {
  return cluster
    .stats()
    .nodes.filter((n) => n.role === 'replica')
    .reduce((a, n) => a + n.queries, 0);
}
