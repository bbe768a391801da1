/** Operator endpoints without an actor: `/syncx/status` and `/syncx/health` (503 unless healthy). */
import { sendJson } from './error-body.js';
import type { RouteContext, RouteDef } from './route.js';

export function statusRoutes({ service }: RouteContext): RouteDef[] {
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
  ];
}
