/** The snapshot endpoints (§6): create a snapshot session, page its rows, delete it. */
import {
  type SnapshotSessionCreateRequest,
  snapshotSessionCreateRequestSchema,
} from '../../../shared/wire.js';
import { parseParams, rowPageQuerySchema, snapshotIdParamsSchema } from './params.js';
import { bodyText, parseBody } from './request.js';
import type { RouteContext, RouteDef } from './route.js';

export function snapshotRoutes({ service }: RouteContext): RouteDef[] {
  return [
    {
      method: 'POST',
      url: '/sync/snapshot-sessions',
      failCode: 'snapshot_session_create_failed',
      failMessage: 'Failed to create snapshot session',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        // An empty body is a plain snapshot; a body must parse.
        let body: SnapshotSessionCreateRequest = {};
        if (bodyText(req).trim() !== '') {
          const parsed = parseBody(
            req,
            snapshotSessionCreateRequestSchema,
            'snapshot_session_invalid',
            'Failed to parse snapshot session request',
          );
          if (parsed.source_replacement) body = { source_replacement: parsed.source_replacement };
        }
        return service.createSnapshotSession(actor, body, { signal });
      },
    },
    {
      method: 'GET',
      url: '/sync/snapshot-sessions/:snapshot_id',
      failCode: 'snapshot_chunk_failed',
      failMessage: 'Failed to load snapshot chunk',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const code = 'snapshot_chunk_invalid';
        const { snapshot_id } = parseParams(req.params, snapshotIdParamsSchema, code);
        const page = parseParams(req.query, rowPageQuerySchema, code);
        return service.getSnapshotChunk(
          actor,
          snapshot_id,
          { afterRowOrdinal: page.after_row_ordinal, maxRows: page.max_rows },
          { signal, rawPayloads: true },
        );
      },
    },
    {
      method: 'DELETE',
      url: '/sync/snapshot-sessions/:snapshot_id',
      failCode: 'snapshot_session_delete_failed',
      failMessage: 'Failed to delete snapshot session',
      actor: true,
      handler: async (req, _reply, actor, signal) => {
        const { snapshot_id } = parseParams(req.params, snapshotIdParamsSchema, 'invalid_request');
        await service.deleteSnapshotSession(actor, snapshot_id, { signal });
        return undefined;
      },
    },
  ];
}
