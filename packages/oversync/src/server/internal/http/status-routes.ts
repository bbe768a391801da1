/**
 * Endpoints without an actor: `/syncx/status`, `/syncx/health` (503 unless healthy) and the OpenAPI
 * document of the routes, `/sync/openapi.json`.
 */
import { type OpenApiDocument, oversyncOpenApiDocument } from '../../openapi/document.js';
import { OPENAPI_DOCUMENT_URL } from '../../openapi/operations.js';
import { sendJson } from './error-body.js';
import type { RouteContext, RouteDef } from './route.js';

export function statusRoutes({ service }: RouteContext): RouteDef[] {
  // Built at registration, so a schema zod cannot express fails there rather than in a request;
  // a prefix (known from the route's URL) only renames the paths.
  const document = oversyncOpenApiDocument();
  const documents = new Map<string, OpenApiDocument>([['', document]]);
  return [
    {
      method: 'GET',
      url: '/syncx/status',
      failCode: 'status_failed',
      failMessage: 'Failed to load status',
      actor: false,
      handler: (_req, _reply, _actor, signal) => service.status({ signal }),
    },
    {
      method: 'GET',
      url: '/syncx/health',
      failCode: 'health_failed',
      failMessage: 'Failed to load health',
      actor: false,
      handler: async (_req, reply, _actor, signal) => {
        const s = await service.status({ signal });
        sendJson(reply, s.status === 'healthy' ? 200 : 503, s);
        return s;
      },
    },
    {
      method: 'GET',
      url: OPENAPI_DOCUMENT_URL,
      failCode: 'status_failed',
      failMessage: 'Failed to load the OpenAPI document',
      actor: false,
      handler: async (req) => {
        const prefix = req.routeOptions.url?.slice(0, -OPENAPI_DOCUMENT_URL.length) ?? '';
        let doc = documents.get(prefix);
        if (!doc) {
          doc = {
            ...document,
            paths: Object.fromEntries(Object.entries(document.paths).map(([p, v]) => [prefix + p, v])),
          };
          documents.set(prefix, doc);
        }
        return doc;
      },
    },
  ];
}
