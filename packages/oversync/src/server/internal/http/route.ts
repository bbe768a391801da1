/**
 * One route of the plugin and how it runs: the actor resolved from the request (the host's
 * authentication and the source header), an abort signal that fires when the client goes away,
 * the handler's result sent as JSON (204 for none), its errors through error-body.ts. Also the
 * 405 routes of known paths.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SOURCE_ID_HEADER } from '../../../shared/wire.js';
import type { Actor } from '../../actor.js';
import type { BundleChangeSubscription } from '../../bundle-change-subscription.js';
import type { SyncService } from '../../service.js';
import { checkActor, HTTP_ACTOR_NAMING } from '../identity.js';
import { type EndpointFailure, sendMethodNotAllowed, sendOperationError, sendResult } from './error-body.js';

/** The trusted user id of a request (see `OversyncFastifyOptions.userIdFromRequest`). */
export type UserIdFromRequest = (
  request: FastifyRequest,
) => string | null | undefined | Promise<string | null | undefined>;

/** Per-actor policy for `GET /sync/watch` (see `OversyncFastifyOptions.bundleChangeWatchAllowed`). */
export type WatchPolicy = (request: FastifyRequest, actor: Actor) => boolean | Promise<boolean>;

/** What the route families share: the service, the host's policies, the open watch streams. */
export interface RouteContext {
  readonly service: SyncService;
  readonly bundleChangeWatchAllowed: WatchPolicy | undefined;
  /** Open watch streams, ended by the plugin's `preClose` hook. */
  readonly openWatches: Set<BundleChangeSubscription>;
}

export type Handler = (
  req: FastifyRequest,
  reply: FastifyReply,
  actor: Actor,
  signal: AbortSignal,
) => Promise<unknown>;

export interface RouteDef extends EndpointFailure {
  readonly method: 'GET' | 'POST' | 'DELETE';
  readonly url: string;
  /** The route acts for a user and source (resolved before the handler runs). */
  readonly actor: boolean;
  readonly handler: Handler;
}

const NO_ACTOR: Actor = Object.freeze({ userId: '', sourceId: '' });

/** The request's actor; a missing or unacceptable identity throws its wire error. */
async function actorOf(req: FastifyRequest, userIdFromRequest: UserIdFromRequest): Promise<Actor> {
  let userId: string | null | undefined;
  try {
    userId = await userIdFromRequest(req);
  } catch {
    userId = undefined;
  }
  const header = req.headers[SOURCE_ID_HEADER.toLowerCase()];
  return checkActor(userId, Array.isArray(header) ? header[0] : header, HTTP_ACTOR_NAMING);
}

export function mountRoute(
  fastify: FastifyInstance,
  def: RouteDef,
  userIdFromRequest: UserIdFromRequest,
): void {
  fastify.route({
    method: def.method,
    url: def.url,
    handler: async (req, reply) => {
      let actor = NO_ACTOR;
      if (def.actor) {
        try {
          actor = await actorOf(req, userIdFromRequest);
        } catch (e) {
          return sendOperationError(req, reply, e, def);
        }
        req.oversyncActor = actor;
      }
      const ac = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableEnded) ac.abort(new Error('client closed the request'));
      };
      reply.raw.once('close', onClose);
      try {
        const result = await def.handler(req, reply, actor, ac.signal);
        if (reply.sent) return reply;
        if (result === undefined) return reply.code(204).send();
        return await sendResult(reply, result);
      } catch (e) {
        if (reply.sent) return reply;
        return sendOperationError(req, reply, e, def);
      } finally {
        if (reply.raw.writableEnded) reply.raw.removeListener('close', onClose);
      }
    },
  });
}

export const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'] as const;

/** Wrong method on a known path ⇒ 405 `method_not_allowed`. */
export function mountMethodNotAllowed(fastify: FastifyInstance, routes: readonly RouteDef[]): void {
  const byUrl = new Map<string, Set<string>>();
  for (const r of routes) {
    const s = byUrl.get(r.url) ?? new Set<string>();
    s.add(r.method);
    byUrl.set(r.url, s);
  }
  for (const [url, methods] of byUrl) {
    const allowed = [...methods];
    fastify.route({
      method: METHODS.filter((m) => !methods.has(m)),
      url,
      exposeHeadRoute: false,
      handler: async (_req, reply) => sendMethodNotAllowed(reply, allowed),
    });
  }
}
