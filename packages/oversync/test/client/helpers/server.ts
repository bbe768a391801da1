import { createCluster } from '@x/dbx';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
// Relative import so benchmarks run by tsx use the sources too (vitest aliases resolve either way).
import { createSyncService, oversyncFastifyPlugin, type SyncService } from '../../../src/server/index.js';
import { BUSINESS_SCHEMA, type TestSchema } from './schema.js';

export { CLIENT_TABLES, PG_BUSINESS_DDL, SQLITE_BUSINESS_DDL } from './schema.js';

export interface TestServer {
  readonly baseUrl: string;
  readonly dbUrl: string;
  readonly service: SyncService;
  query<R = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Stops the HTTP server and the sync service; the database stays (for a restart over it). */
  stop(): Promise<void>;
  /** Stops and drops the database it created. */
  close(): Promise<void>;
}

export interface TestServerOptions {
  retainedBundlesPerUser?: number;
  /** `limits.snapshotPipelineMinRows` (default: the service's, off). */
  snapshotPipelineMinRows?: number;
  watch?: boolean;
  heartbeatIntervalMs?: number;
  /** Use this database instead of a fresh one from the shared test cluster. */
  database?: Pick<TestDatabase, 'url'>;
  /** Create the business schema in `database` (always done for a fresh one). */
  createSchema?: boolean;
  port?: number;
  /** The business tables (default: the users/posts/files/typed_rows schema). */
  schema?: TestSchema;
}

/** Our server (fastify + @x/oversync/server) over a fresh database on the shared test cluster. */
export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const ownDb = !opts.database;
  const tdb = opts.database ?? (await createTestDatabase({ prefix: 'oversync_client' }));
  const admin = new pg.Client({ connectionString: tdb.url });
  await admin.connect();
  const schema = opts.schema ?? BUSINESS_SCHEMA;
  if (ownDb || opts.createSchema) await admin.query(schema.pg);
  const cluster = createCluster({ primary: tdb.url });
  const service = createSyncService({
    db: cluster,
    registeredTables: schema.tables.map((t) => ({
      schema: 'business',
      table: t.table,
      syncKeyColumns: [...t.syncKeyColumns],
    })),
    limits: {
      ...(opts.retainedBundlesPerUser ? { retainedBundlesPerUser: opts.retainedBundlesPerUser } : {}),
      ...(opts.snapshotPipelineMinRows ? { snapshotPipelineMinRows: opts.snapshotPipelineMinRows } : {}),
    },
    bundleChangeWatch: {
      enabled: opts.watch ?? false,
      ...(opts.heartbeatIntervalMs ? { heartbeatIntervalMs: opts.heartbeatIntervalMs } : {}),
    },
  });
  await service.bootstrap();
  const app: FastifyInstance = Fastify({ logger: false });
  await app.register(oversyncFastifyPlugin, {
    service,
    userIdFromRequest: (req) => {
      const h = req.headers.authorization ?? '';
      return h.startsWith('Bearer ') ? h.slice(7) : undefined;
    },
  });
  if (opts.watch) {
    // not (yet) on the SyncService interface: the implementation's readiness hook
    await (
      service as unknown as { bundleChangeListenerReady?(ms: number): Promise<void> }
    ).bundleChangeListenerReady?.(10_000);
  }
  await app.listen({ port: opts.port ?? 0, host: '127.0.0.1' });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  let stopped = false;
  let closed = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    // The service first: it ends open watch streams, which the HTTP server would wait for.
    await service.close();
    await app.close();
    await cluster.close();
  };
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    dbUrl: tdb.url,
    service,
    async query<R>(sql: string, params: unknown[] = []) {
      return (await admin.query(sql, params)).rows as R[];
    },
    stop,
    async close() {
      if (closed) return;
      closed = true;
      await stop();
      await admin.end();
      if (ownDb) await (tdb as TestDatabase).drop();
    },
  };
}
