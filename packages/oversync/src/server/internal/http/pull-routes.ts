/** The pull endpoints (§5): `GET /sync/pull` and a committed bundle's rows. */
import { wireError } from '../../errors.js';
import { MAX_BUNDLES_PER_PULL } from '../../options.js';
import type { PullParams } from '../../pull-params.js';
import { intParam, parseGoInt, pathParam } from './request.js';
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
        const seq = parseGoInt(pathParam(req, 'bundle_seq'));
        if (seq === undefined) throw wireError(code, 'bundle_seq must be an integer');
        if (seq <= 0) throw wireError(code, 'bundle_seq must be > 0');
        const afterRowOrdinal = intParam(req, 'after_row_ordinal', code, 0);
        const maxRows = intParam(req, 'max_rows', code, 1);
        return service.getCommittedBundleRows(
          actor,
          seq,
          { afterRowOrdinal, maxRows },
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
        const code = 'invalid_request';
        // Absent parameters are left to the service's defaults (one home for them).
        const params: Partial<PullParams> = {};
        const after = intParam(req, 'after_bundle_seq', code, 0);
        if (after !== undefined) params.afterBundleSeq = after;
        const maxBundles = intParam(req, 'max_bundles', code, 1);
        if (maxBundles !== undefined) {
          if (maxBundles > MAX_BUNDLES_PER_PULL)
            throw wireError(code, `max_bundles must be <= ${MAX_BUNDLES_PER_PULL}`);
          params.maxBundles = maxBundles;
        }
        const target = intParam(req, 'target_bundle_seq', code, 0);
        if (target !== undefined) params.targetBundleSeq = target;
        return service.pull(actor, params, { signal, rawPayloads: true });
      },
    },
  ];
}
