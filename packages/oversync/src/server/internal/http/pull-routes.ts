/** The pull endpoints (§5): `GET /sync/pull` and a committed bundle's rows. */
import type { PullParams } from '../../pull-params.js';
import { bundleSeqParamsSchema, parseParams, pullQuerySchema, rowPageQuerySchema } from './params.js';
import type { RouteContext, RouteDef } from './route.js';

export function pullRoutes({ service }: RouteContext): RouteDef[] {
  return [
    {
      method: 'GET',
      url: '/sync/committed-bundles/:bundle_seq/rows',
      failCode: 'committed_bundle_rows_failed',
      failMessage: 'Failed to load committed bundle rows',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const code = 'committed_bundle_chunk_invalid';
        const seq = parseParams(req.params, bundleSeqParamsSchema, code).bundle_seq;
        const page = parseParams(req.query, rowPageQuerySchema, code);
        return service.getCommittedBundleRows(
          actor,
          seq,
          { afterRowOrdinal: page.after_row_ordinal, maxRows: page.max_rows },
          { signal, rawPayloads: true },
        );
      },
    },
    {
      method: 'GET',
      url: '/sync/pull',
      failCode: 'pull_failed',
      failMessage: 'Failed to pull bundles',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const q = parseParams(req.query, pullQuerySchema, 'invalid_request');
        // Absent parameters are left to the service's defaults (one home for them).
        const params: Partial<PullParams> = {};
        if (q.after_bundle_seq !== undefined) params.afterBundleSeq = q.after_bundle_seq;
        if (q.max_bundles !== undefined) params.maxBundles = q.max_bundles;
        if (q.target_bundle_seq !== undefined) params.targetBundleSeq = q.target_bundle_seq;
        return service.pull(actor, params, { signal, rawPayloads: true });
      },
    },
  ];
}
