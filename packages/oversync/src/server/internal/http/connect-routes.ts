/** Connect (§3) and capabilities: what a client asks before it syncs. */
import { connectRequestSchema } from '../../../shared/wire.js';
import { parseBody } from './request.js';
import type { RouteContext, RouteDef } from './route.js';

export function connectRoutes({ service, bundleChangeWatchAllowed }: RouteContext): RouteDef[] {
  return [
    {
      method: 'POST',
      url: '/sync/connect',
      failCode: 'connect_failed',
      failMessage: 'Failed to connect',
      actor: true,
      handler: (req, _reply, actor, signal) =>
        service.connect(
          actor,
          parseBody(req, connectRequestSchema, 'invalid_request', 'Failed to parse connect request'),
          { signal },
        ),
    },
    {
      method: 'GET',
      url: '/sync/capabilities',
      failCode: 'invalid_request',
      failMessage: 'Failed to load capabilities',
      actor: true,
      handler: async (req, _reply, actor) => {
        const allowed = bundleChangeWatchAllowed ? await bundleChangeWatchAllowed(req, actor) : true;
        return service.capabilities({ watchAllowed: allowed });
      },
    },
  ];
}
