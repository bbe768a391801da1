/** POST /sync/connect: scope initialisation leases (§7). */
import { randomUUID } from 'node:crypto';
import type { ConnectRequest, ConnectResponse } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import { boundedTx, type OpOptions, type ServiceContext, txOpts } from './context.js';
import { SCOPE_INITIALIZED, SCOPE_UNINITIALIZED } from './schema-sql.js';
import { ensureUserScope, loadScopeForUpdate, lockUser, markScopeInitialized } from './state.js';

/** RFC 3339 UTC with the fraction's trailing zeros trimmed (Go's RFC3339Nano), from PG `to_char`. */
export const RFC3339_SQL = (col: string) =>
  `regexp_replace(to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '\\.?0+$', '') || 'Z'`;

export async function connect(
  ctx: ServiceContext,
  actor: Actor,
  req: ConnectRequest,
  opts: OpOptions,
): Promise<ConnectResponse> {
  const ttlMs = ctx.options.limits.initializationLeaseTtlMs;
  return boundedTx(
    ctx,
    async (tx) => {
      await lockUser(tx, actor.userId, 0);
      const userPk = await ensureUserScope(tx, actor.userId);
      const scope = await loadScopeForUpdate(tx, userPk);
      if (scope.stateCode === SCOPE_INITIALIZED) return { resolution: 'remote_authoritative' };
      const ownLease =
        scope.stateCode !== SCOPE_UNINITIALIZED && scope.initializerSourceId === actor.sourceId;
      if (scope.stateCode === SCOPE_UNINITIALIZED || ownLease) {
        if (!req.has_local_pending_rows) {
          await markScopeInitialized(tx, userPk, actor.sourceId);
          return { resolution: 'initialize_empty' };
        }
        const id = ownLease ? scope.initializationId! : randomUUID();
        const r = await tx.query<{ lease: string }>(
          `UPDATE sync.scope_state SET state_code = 1, initializer_source_id = $2, initialization_id = $3,
                lease_expires_at = now() + make_interval(secs => $4::float8 / 1000),
                initialized_at = NULL, initialized_by_source_id = NULL
          WHERE user_pk = $1 RETURNING ${RFC3339_SQL('lease_expires_at')} AS lease`,
          [userPk, actor.sourceId, id, ttlMs],
        );
        return { resolution: 'initialize_local', initialization_id: id, lease_expires_at: r.rows[0]!.lease };
      }
      const r = await tx.query<{ lease: string; secs: number }>(
        `SELECT ${RFC3339_SQL('lease_expires_at')} AS lease,
              greatest(1, floor(extract(epoch FROM lease_expires_at - now())))::int AS secs
         FROM sync.scope_state WHERE user_pk = $1`,
        [userPk],
      );
      return {
        resolution: 'retry_later',
        retry_after_seconds: r.rows[0]!.secs,
        lease_expires_at: r.rows[0]!.lease,
      };
    },
    txOpts(opts.signal, { isolation: 'read committed', maxAttempts: 1 }),
  );
}
