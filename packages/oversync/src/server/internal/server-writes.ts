/** Server-originated writes (§12): withinSyncBundle and the scope manager's execWrite. */
import type { Bundle } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import type { SyncQuerier } from '../database.js';
import { SyncServerError, wireError } from '../errors.js';
import type { BundleSource, BundleWriteFn, ScopeWriteResult } from '../server-writes.js';
import { finalizeCapturedBundleSql } from './capture.js';
import { type OpOptions, type ServiceContext, txOpts } from './context.js';
import { SCOPE_INITIALIZING, SCOPE_UNINITIALIZED } from './schema-sql.js';
import {
  activateSourceAndRetain,
  checkSourceSequence,
  ensureUserScope,
  loadScopeForUpdate,
  loadSourceState,
  lockUser,
  markScopeInitialized,
  type ScopeState,
  setBundleContext,
  sourceRetiredError,
} from './state.js';

function scopeGate(userId: string, scope: ScopeState): void {
  if (scope.stateCode === SCOPE_INITIALIZING) {
    throw wireError('scope_initializing', `scope for user ${userId} is initializing`);
  }
  if (scope.stateCode === SCOPE_UNINITIALIZED) {
    throw wireError('scope_uninitialized', `scope for user ${userId} is uninitialized`);
  }
}

async function bundleCore(
  ctx: ServiceContext,
  tx: SyncQuerier,
  userId: string,
  userPk: string,
  source: BundleSource,
  fn: BundleWriteFn,
): Promise<Bundle | null> {
  await tx.query('SET CONSTRAINTS ALL DEFERRED');
  const src = await loadSourceState(tx, userPk, source.sourceId, true);
  checkSourceSequence({ userId, sourceId: source.sourceId }, src, source.sourceBundleId);
  await setBundleContext(tx, {
    userId,
    userPk,
    sourceId: source.sourceId,
    sourceBundleId: source.sourceBundleId,
    initializationId: '',
  });
  await fn(tx);
  const bundle = await finalizeCapturedBundleSql(tx, ctx.topology, userPk, source, ctx.notifyChannel);
  if (bundle) {
    await activateSourceAndRetain(tx, userPk, source.sourceId, source.sourceBundleId, ctx.options.limits);
    return bundle;
  }
  return null;
}

/**
 * Runs `fn` in one transaction as sync bundle `source` of `actor.userId`'s scope: its writes to
 * registered tables are captured and committed as one bundle that clients receive on their next
 * pull. Returns null (and consumes nothing) when `fn` wrote no business-table effect. Never
 * retried: `fn` runs exactly once.
 */
export async function withinSyncBundle(
  ctx: ServiceContext,
  actor: Pick<Actor, 'userId'>,
  source: BundleSource,
  fn: BundleWriteFn,
  opts: OpOptions,
): Promise<Bundle | null> {
  const userId = actor.userId?.trim() ?? '';
  if (!userId) throw wireError('authentication_failed', 'bundle user_id is required');
  if (!source.sourceId?.trim())
    throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'bundle source_id is required');
  if (!(Number.isSafeInteger(source.sourceBundleId) && source.sourceBundleId > 0)) {
    throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'bundle source_bundle_id must be > 0');
  }
  if (typeof fn !== 'function')
    throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'bundle callback is required');
  return ctx.db.runTx(
    async (tx) => {
      await lockUser(tx, userId, 0);
      const userPk = await ensureUserScope(tx, userId);
      scopeGate(userId, await loadScopeForUpdate(tx, userPk));
      return bundleCore(ctx, tx, userId, userPk, source, fn);
    },
    txOpts(opts.signal, { isolation: 'read committed', maxAttempts: 1 }),
  );
}

/**
 * Writes into `scopeId` as writer `writerId` (a source id sharing the device namespace): initialises
 * an UNINITIALIZED scope, picks the writer's next source_bundle_id, and commits one bundle. A
 * callback that changes nothing fails with OVERSYNC_SCOPE_WRITE_NO_CAPTURED_CHANGES and rolls back
 * everything, the auto-initialisation included.
 */
export async function execScopeWrite(
  ctx: ServiceContext,
  scopeId: string,
  writerId: string,
  fn: BundleWriteFn,
  opts: OpOptions,
): Promise<ScopeWriteResult> {
  const scope = scopeId?.trim() ?? '';
  const writer = writerId?.trim() ?? '';
  if (!scope) throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'scope_id is required');
  if (!writer) throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'writer_id is required');
  if (typeof fn !== 'function')
    throw new SyncServerError('OVERSYNC_SCOPE_WRITE_INVALID', 'scope write callback is required');
  return ctx.db.runTx(
    async (tx) => {
      await lockUser(tx, scope, 0);
      const userPk = await ensureUserScope(tx, scope);
      const state = await loadScopeForUpdate(tx, userPk);
      let autoInitialized = false;
      if (state.stateCode === SCOPE_UNINITIALIZED) {
        await markScopeInitialized(tx, userPk, writer);
        autoInitialized = true;
      } else {
        scopeGate(scope, state);
      }
      const src = await loadSourceState(tx, userPk, writer, true);
      if (src.state === 'retired') throw sourceRetiredError(scope, writer, src.replacedBy);
      const bundle = await bundleCore(
        ctx,
        tx,
        scope,
        userPk,
        { sourceId: writer, sourceBundleId: src.expected },
        fn,
      );
      if (!bundle) {
        throw new SyncServerError(
          'OVERSYNC_SCOPE_WRITE_NO_CAPTURED_CHANGES',
          `scope write by ${writer} to scope ${scope} captured no business-table changes`,
          { details: { scopeId: scope, writerId: writer } },
        );
      }
      return { autoInitialized, bundle };
    },
    txOpts(opts.signal, { isolation: 'read committed', maxAttempts: 1 }),
  );
}
