/** `GET /sync/watch`: committed-bundle events of the actor's scope as server-sent events. */
import type { FastifyReply } from 'fastify';
import { goEscapeJsonText } from '../../../shared/canonical-json.js';
import type { BundleChangeSubscription } from '../../bundle-change-subscription.js';
import { wireError } from '../../errors.js';
import { parseParams, watchQuerySchema } from './params.js';
import type { RouteContext, RouteDef } from './route.js';

export function watchRoutes({ service, bundleChangeWatchAllowed, openWatches }: RouteContext): RouteDef[] {
  return [
    {
      method: 'GET',
      url: '/sync/watch',
      failCode: 'bundle_change_watch_failed',
      failMessage: 'Failed to watch bundle changes',
      actor: true,
      handler: async (req, reply, actor, signal) => {
        const enabled = service.options.bundleChangeWatch.enabled;
        if (enabled && bundleChangeWatchAllowed && !(await bundleChangeWatchAllowed(req, actor))) {
          throw wireError(
            'bundle_change_watch_forbidden',
            'Bundle change watch is not enabled for this client',
          );
        }
        const afterBundleSeq =
          parseParams(req.query, watchQuerySchema, 'invalid_request').after_bundle_seq ?? 0;
        const sub = await service.watchBundleChanges(actor, { afterBundleSeq }, { signal });
        openWatches.add(sub);
        try {
          await streamBundleEvents(reply, sub, service.options.bundleChangeWatch.heartbeatIntervalMs);
        } finally {
          openWatches.delete(sub);
        }
        return undefined;
      },
    },
  ];
}

/** Server-sent events: `event: bundle` frames and `: heartbeat` comments until either side closes. */
async function streamBundleEvents(
  reply: FastifyReply,
  sub: BundleChangeSubscription,
  heartbeatMs: number,
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  const headers: Record<string, string> = {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  };
  // A stream ends when either side closes, and its HTTP/1.1 connection is not reused afterwards:
  // the server closes it at once. Otherwise `app.close()` waited until the client closed its side
  // (undici: 4 s after a client dropped the stream) or fastify's keepAliveTimeout (72 s) ran out.
  const http1 = reply.request.raw.httpVersionMajor < 2;
  const socket = http1 ? reply.request.raw.socket : undefined;
  if (http1) headers['connection'] = 'close';
  raw.writeHead(200, headers);
  raw.flushHeaders();
  const onClose = () => sub.close();
  raw.once('close', onClose);
  const heartbeat = setInterval(() => {
    if (!raw.writableEnded) raw.write(': heartbeat\n\n');
  }, heartbeatMs);
  heartbeat.unref();
  try {
    for await (const e of sub) {
      if (raw.writableEnded || raw.destroyed) break;
      raw.write(`event: bundle\ndata: ${goEscapeJsonText(JSON.stringify(e))}\n\n`);
    }
  } finally {
    clearInterval(heartbeat);
    raw.removeListener('close', onClose);
    sub.close();
    if (!raw.writableEnded && !raw.destroyed) raw.end(() => socket?.destroy());
    else socket?.destroy();
  }
}
