/**
 * The fastify plugin: registration only. It validates its options, reads every body as text, maps
 * fastify's own errors to the protocol's error body, ends watch streams before the server closes,
 * and mounts the route families of internal/http/ (one file per endpoint family) plus the 405
 * answers of their paths.
 */

import { formatOptionIssues, optionIssues } from '@x/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Actor } from './actor.js';
import { SyncServerError } from './errors.js';
import { connectRoutes } from './internal/http/connect-routes.js';
import { sendFrameworkError, sendRouterError } from './internal/http/error-body.js';
import { pullRoutes } from './internal/http/pull-routes.js';
import { pushRoutes } from './internal/http/push-routes.js';
import {
  mountMethodNotAllowed,
  mountRoute,
  type RouteContext,
  type RouteDef,
  type UserIdFromRequest,
  type WatchPolicy,
} from './internal/http/route.js';
import { snapshotRoutes } from './internal/http/snapshot-routes.js';
import { statusRoutes } from './internal/http/status-routes.js';
import { watchRoutes } from './internal/http/watch-routes.js';
import { DEFAULT_BODY_LIMIT_BYTES } from './options.js';
import type { SyncService } from './service.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The actor of an oversync route, once resolved. */
    oversyncActor?: Actor;
  }
}

/** The plugin's default `bodyLimit`: 32 MiB. */
export const DEFAULT_FASTIFY_BODY_LIMIT = DEFAULT_BODY_LIMIT_BYTES;

/** Options of {@link oversyncFastifyPlugin}. */
export interface OversyncFastifyOptions {
  service: SyncService;
  /**
   * The trusted user id of a request, from the host's authentication (e.g. the `sub` of a JWT the
   * host's own hook verified). Blank or missing ⇒ 401 `authentication_failed`. Never read from the body.
   */
  userIdFromRequest: (
    request: FastifyRequest,
  ) => string | null | undefined | Promise<string | null | undefined>;
  /** Per-actor policy for `GET /sync/watch` (default: allowed). */
  bundleChangeWatchAllowed?: (request: FastifyRequest, actor: Actor) => boolean | Promise<boolean>;
  /** Largest accepted request body in bytes (default 32 MiB); larger ⇒ 413 `invalid_request`. */
  bodyLimit?: number;
}

/**
 * Strict: an unknown key is refused (OVERSYNC_INVALID_OPTIONS naming it). fastify's own
 * registration options (`prefix`, `logLevel`, `logSerializers`) reach the plugin too and are let
 * through.
 */
const optionsSchema = z.strictObject({
  service: z.custom<SyncService>(
    (v) =>
      typeof v === 'object' &&
      v !== null &&
      typeof (v as { bootstrap?: unknown }).bootstrap === 'function' &&
      typeof (v as { capabilities?: unknown }).capabilities === 'function',
    'expected a sync service (createSyncService)',
  ),
  userIdFromRequest: z.custom<UserIdFromRequest>((v) => typeof v === 'function', 'expected a function'),
  bundleChangeWatchAllowed: z
    .custom<WatchPolicy>((v) => typeof v === 'function', 'expected a function')
    .optional(),
  bodyLimit: z.number().int().positive().optional(),
  prefix: z.string().optional(),
  logLevel: z.string().optional(),
  logSerializers: z.record(z.string(), z.unknown()).optional(),
});

/**
 * For the host's `Fastify({ frameworkErrors })` option: the errors fastify's router answers before
 * any route or plugin runs (a path parameter longer than `maxParamLength`, a malformed URL) get
 * the protocol's JSON error body (`invalid_request`) instead of fastify's own.
 *
 * @example
 * ```ts
 * import { oversyncFrameworkErrors } from '@x/oversync/server';
 * import Fastify from 'fastify';
 *
 * const app = Fastify({ routerOptions: { maxParamLength: 100 }, frameworkErrors: oversyncFrameworkErrors });
 * app.get('/notes/:id', async () => ({}));
 * const res = await app.inject({ url: `/notes/${'x'.repeat(200)}` });
 * console.log(res.statusCode, res.json()); // 414 { error: 'invalid_request', message: 'malformed request URL' }
 * await app.close();
 * ```
 */
export function oversyncFrameworkErrors(
  error: { statusCode?: number; message?: string },
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  sendRouterError(reply, error);
}

/**
 * Mounts the go-oversync v1 routes (`/sync/*`, `/syncx/*`) on a fastify instance. Register it
 * after the host's auth hook; `userIdFromRequest` reads the identity that hook established.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { createSyncService, oversyncFastifyPlugin, oversyncFrameworkErrors } from '@x/oversync/server';
 * import Fastify from 'fastify';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL ?? 'postgres://localhost/postgres' });
 * const sync = createSyncService({ db, registeredTables: [{ schema: 'business', table: 'users' }] });
 * await sync.bootstrap();
 *
 * const tokens = new Map([['token-of-ann', 'user-123']]); // your token verifier
 * const app = Fastify({ frameworkErrors: oversyncFrameworkErrors });
 * await app.register(oversyncFastifyPlugin, {
 *   service: sync,
 *   // the trusted user id; none ⇒ 401 authentication_failed
 *   userIdFromRequest: (req) => tokens.get(req.headers.authorization?.replace('Bearer ', '') ?? ''),
 * });
 * console.log('sync server on', await app.listen({ port: 8080 }));
 *
 * // shutdown: HTTP intake first, then the service, then the pool
 * process.once('SIGTERM', async () => {
 *   await app.close();
 *   await sync.close();
 *   await db.close();
 * });
 * ```
 */
export async function oversyncFastifyPlugin(fastify: FastifyInstance, rawOptions: OversyncFastifyOptions) {
  const parsed = optionsSchema.safeParse(rawOptions);
  if (!parsed.success) {
    throw new SyncServerError(
      'OVERSYNC_INVALID_OPTIONS',
      `invalid oversync fastify options: ${formatOptionIssues(optionIssues(parsed.error))}`,
      { details: { issues: parsed.error.issues } },
    );
  }
  const opts = rawOptions;
  const bodyLimit = opts.bodyLimit ?? DEFAULT_FASTIFY_BODY_LIMIT;
  const ctx: RouteContext = {
    service: opts.service,
    bundleChangeWatchAllowed: opts.bundleChangeWatchAllowed,
    openWatches: new Set(),
  };

  // Open watch streams never end on their own, so `app.close()` would wait for them forever:
  // end them before fastify stops accepting and waits for in-flight requests.
  fastify.addHook('preClose', async () => {
    for (const sub of ctx.openWatches) sub.close();
  });

  // Bodies are read as text whatever the content type and parsed per endpoint (Go ignores
  // Content-Type too), so every malformed body gets the endpoint's own 400 code.
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_req, body, done) => done(null, body));

  fastify.setErrorHandler((err: { statusCode?: number; code?: string; message?: string }, req, reply) =>
    sendFrameworkError(req, reply, err, bodyLimit),
  );

  const routes: RouteDef[] = [
    ...connectRoutes(ctx),
    ...pushRoutes(ctx),
    ...pullRoutes(ctx),
    ...snapshotRoutes(ctx),
    ...watchRoutes(ctx),
    ...statusRoutes(ctx),
  ];
  for (const r of routes) mountRoute(fastify, r, opts.userIdFromRequest);
  mountMethodNotAllowed(fastify, routes);
}
