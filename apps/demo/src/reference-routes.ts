/**
 * The reference example's test-only routes (`POST /test/reset`, `POST /test/retention-floor`),
 * mounted by the demo server under the reference profile.
 */
import type { Cluster } from '@x/dbx';
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { Profile } from './profiles.js';
import type { TenantProvisioning } from './tenants.js';

const retentionFloorSchema = z.object({
  user_id: z.string(),
  retained_bundle_floor: z.number().int(),
});

function jsonBody(body: unknown): unknown {
  if (typeof body !== 'string') return body;
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/**
 * The reference example's test-only routes, which its end-to-end clients call between scenarios:
 * `POST /test/reset` (drop the sync and business schemas, recreate the tables, bootstrap again) and
 * `POST /test/retention-floor` (move a user's retained-bundle floor, to provoke `history_pruned`).
 */
export function mountReferenceTestRoutes(
  app: FastifyInstance,
  cluster: Cluster,
  replaceService: () => Promise<void>,
  provisioning: TenantProvisioning,
  profile: Profile,
  log: (line: string) => void,
): void {
  let resets = 0;
  app.post('/test/reset', async (_req, reply) => {
    try {
      await cluster.runTx(async (tx) => {
        await tx.exec('DROP SCHEMA IF EXISTS sync CASCADE');
        for (const t of profile.tenants) await tx.exec(profile.tenantDropDdl(t));
      });
      await provisioning.reapply(`reset-${Date.now()}-${++resets}`);
      await replaceService(); // a fresh service bootstraps the dropped sync schema again
      log('test/reset: sync and business schemas recreated');
      return reply.send({ status: 'ok', schema: profile.tenants[0] ?? '' });
    } catch (e) {
      return reply.code(500).send({ error: 'reset_failed', message: String(e) });
    }
  });
  app.post('/test/retention-floor', async (req, reply) => {
    const p = retentionFloorSchema.safeParse(jsonBody(req.body));
    if (!p.success) return reply.code(400).send({ error: 'invalid_request', message: 'invalid JSON' });
    if (p.data.user_id.trim() === '')
      return reply.code(400).send({ error: 'invalid_request', message: 'user_id required' });
    if (p.data.retained_bundle_floor < 0)
      return reply
        .code(400)
        .send({ error: 'invalid_request', message: 'retained_bundle_floor must be non-negative' });
    const r = await cluster.exec('UPDATE sync.user_state SET retained_bundle_floor = $2 WHERE user_id = $1', [
      p.data.user_id,
      p.data.retained_bundle_floor,
    ]);
    if (r.rowCount === 0)
      return reply
        .code(404)
        .send({ error: 'user_state_not_found', message: 'no sync user_state row exists for user_id' });
    return reply.send({
      status: 'ok',
      user_id: p.data.user_id,
      retained_bundle_floor: p.data.retained_bundle_floor,
    });
  });
}
