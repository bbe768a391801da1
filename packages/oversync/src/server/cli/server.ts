/**
 * The server `oversync-server` runs: fastify (pino JSON-line logs) + bearer JWT auth + the oversync
 * plugin over an @x/dbx cluster, `/healthz` and `/readyz`, bootstrap retried until PostgreSQL is
 * reachable, and a close that drains: readiness off, intake stopped and watch streams ended (the
 * plugin's preClose), the sync service drained, the pool closed, embedded PostgreSQL stopped.
 */
import { sleep } from '@x/core';
import { type Cluster, createCluster } from '@x/dbx';
import Fastify, { type FastifyRequest } from 'fastify';
import { oversyncFastifyPlugin, oversyncFrameworkErrors } from '../fastify-plugin.js';
import { createSyncService, type SyncService } from '../service.js';
import { bearerToken, createTokenVerifier } from './auth.js';
import type { ServerConfig } from './config.js';
import { type EmbeddedDatabase, startEmbeddedPostgres } from './embedded.js';
import { ServerCommandError } from './errors.js';

export const READY_CHECK_TIMEOUT_MS = 2_000;
export const BOOTSTRAP_RETRY_MIN_MS = 500;
export const BOOTSTRAP_RETRY_MAX_MS = 15_000;
/** The `msg` of the JSON log line announcing the listening URLs. */
export const LISTENING_MESSAGE = 'oversync-server listening';

export interface RunningServer {
  /** Every URL the server listens on. */
  readonly urls: readonly string[];
  readonly database: { url: string; embedded: boolean };
  /** Drains and stops everything (see the module doc). Idempotent. */
  close(): Promise<void>;
}

export interface StartServerOptions {
  /** Human-readable lines (the command writes them to stderr). */
  say: (line: string) => void;
}

export async function startServer(config: ServerConfig, opts: StartServerOptions): Promise<RunningServer> {
  const app = Fastify({
    logger: { level: config.logLevel, base: { name: 'oversync-server', pid: process.pid } },
    bodyLimit: config.bodyLimit,
    frameworkErrors: oversyncFrameworkErrors,
  });
  const log = app.log;
  const undo: Array<() => Promise<unknown>> = [];
  const unwind = async () => {
    for (const u of undo.reverse()) await u().catch((err) => log.error({ err }, 'shutdown step failed'));
  };

  try {
    let embedded: EmbeddedDatabase | undefined;
    let databaseUrl = config.databaseUrl;
    if (databaseUrl === undefined) {
      log.info({ dataDir: config.dataDir ?? null }, 'no database URL: starting embedded PostgreSQL');
      const pgLog = log.child({ component: 'postgres' });
      embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, onLog: (line) => pgLog.debug(line) });
      undo.push(() => embedded!.stop());
      databaseUrl = embedded.url;
      log.info(
        { databaseUrl, dataDir: embedded.dir, keep: embedded.persistent },
        'embedded PostgreSQL started',
      );
      opts.say(
        `embedded PostgreSQL: ${databaseUrl} (data ${embedded.persistent ? `kept in ${embedded.dir}` : 'removed at exit'})`,
      );
    }

    const node = (connectionString: string) => ({ connectionString, options: '-c TimeZone=UTC' });
    const cluster: Cluster = createCluster({
      primary: node(databaseUrl),
      replicas: config.replicaUrls.map(node),
      logger: log.child({ component: 'dbx' }),
    });
    undo.push(() => cluster.close());

    const service: SyncService = createSyncService({
      db: cluster,
      registeredTables: config.tables,
      appName: config.appName,
      maxSupportedSchemaVersion: config.maxSupportedSchemaVersion,
      bundleChangeWatch: { enabled: config.watch },
      limits: { snapshotPipelineMinRows: config.snapshotPipelineMinRows },
      logger: log.child({ component: 'oversync' }),
    });
    undo.push(() => service.close());

    const verify = createTokenVerifier(config.jwt);
    const users = new WeakMap<FastifyRequest, string>();
    app.addHook('onRequest', async (req) => {
      if (!req.url.startsWith('/sync/')) return;
      const token = bearerToken(req.headers.authorization);
      if (token === null) return; // the plugin answers 401 authentication_failed
      const r = await verify(token);
      if (r.ok) users.set(req, r.userId);
      else req.log.info({ reason: r.reason }, 'bearer token refused');
    });
    await app.register(oversyncFastifyPlugin, {
      service,
      userIdFromRequest: (req) => users.get(req),
      bodyLimit: config.bodyLimit,
    });

    let bootstrapped = false;
    let closing = false;
    app.get('/healthz', async () => ({ status: 'ok' }));
    app.get('/readyz', async (_req, reply) => {
      const notReady = (reason: string) => reply.code(503).send({ status: 'not_ready', reason });
      if (closing) return notReady('shutting_down');
      if (!bootstrapped) return notReady('bootstrapping');
      try {
        await cluster.query('SELECT 1', [], { signal: AbortSignal.timeout(READY_CHECK_TIMEOUT_MS) });
      } catch (err) {
        return notReady(`postgres_unreachable: ${(err as Error).message}`);
      }
      return { status: 'ready' };
    });

    // Bootstrap in the background, retried with backoff: the process is up (healthz) while
    // PostgreSQL is not reachable yet; readiness waits for it.
    const stopBootstrap = new AbortController();
    const bootstrapLoop = (async () => {
      let delay = BOOTSTRAP_RETRY_MIN_MS;
      for (let attempt = 1; !stopBootstrap.signal.aborted; attempt++) {
        try {
          await service.bootstrap({ signal: stopBootstrap.signal });
          bootstrapped = true;
          log.info({ tables: config.tables.length, attempt }, 'sync service bootstrapped: ready');
          return;
        } catch (err) {
          if (stopBootstrap.signal.aborted) return;
          log.error(
            { err, code: (err as { code?: unknown }).code, attempt, retryInMs: delay },
            'bootstrap failed; retrying',
          );
          await sleep(delay, { signal: stopBootstrap.signal }).catch(() => undefined);
          delay = Math.min(delay * 2, BOOTSTRAP_RETRY_MAX_MS);
        }
      }
    })();
    undo.push(async () => {
      stopBootstrap.abort();
      await bootstrapLoop;
    });

    try {
      await app.listen({ host: config.host, port: config.port });
    } catch (cause) {
      throw new ServerCommandError(
        'OVERSYNC_SERVER_LISTEN_FAILED',
        `cannot listen on ${config.host}:${config.port}: ${(cause as Error).message}`,
        { cause },
      );
    }
    // Closed first: readiness off, then intake stops and watch streams end (the plugin's preClose).
    undo.push(async () => {
      closing = true;
      await app.close();
    });
    const urls = app.addresses().map((a) => {
      if (typeof a === 'string') return a;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      return `http://${host}:${a.port}`;
    });
    log.info({ urls, embeddedPostgres: embedded !== undefined }, LISTENING_MESSAGE);
    opts.say(`oversync-server listening on ${urls.join(', ')} (ready when GET /readyz answers 200)`);

    let closed: Promise<void> | undefined;
    return {
      urls,
      database: { url: databaseUrl, embedded: embedded !== undefined },
      close: () => {
        closed ??= (async () => {
          log.info({}, 'shutting down: draining');
          await unwind();
          log.info({}, 'shut down');
        })();
        return closed;
      },
    };
  } catch (e) {
    await unwind();
    await app.close().catch(() => undefined);
    throw e;
  }
}
