/**
 * What a failed push means: a conflict to resolve (row by row, or opaque), a committed bundle whose
 * history is gone, a source the server no longer accepts (source recovery), a lost seed lease.
 */
import { canonicalJson } from '../../shared/canonical-json.js';
import { pushConflictDetailsSchema } from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import { resolveConflict } from './conflict-resolution.js';
import {
  countUnstructuredConflict,
  dropSeedLease,
  enterSourceRecovery as markSourceRecovery,
  type OutboxState,
  readOutbox,
} from './local-store.js';
import { rebuild } from './rebuild.js';
import { isCommittedBundleFetchError } from './remote.js';
import { type SyncContext, unwrapRetry } from './sync-context.js';
import { serverCodeOf } from './transport.js';

export function recoveryError(reason: string, cause: unknown): ClientError {
  return new ClientError(
    'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
    `source recovery required (${reason}); call rebuild()`,
    {
      cause,
      details: { reason },
    },
  );
}

/** Maps push failures: conflicts, source sequencing, pruned history, lost seed leases. */
export async function handlePushError(
  ctx: SyncContext,
  e: unknown,
  outbox: OutboxState,
  signal?: AbortSignal,
): Promise<{ row: string } | 'committed' | 'rethrow'> {
  const cause = unwrapRetry(e);
  if (cause instanceof ClientError && cause.details.reason === 'already_committed_mismatch') {
    await enterSourceRecovery(ctx, 'source_sequence_changed', '', signal);
    throw recoveryError('source_sequence_changed', cause);
  }
  const code = serverCodeOf(cause);
  if (!code) return 'rethrow';
  const body = ((cause as ClientError).details.body ?? {}) as Record<string, unknown>;
  switch (code) {
    case 'push_conflict':
    case 'push_row_invalid': {
      const parsed = pushConflictDetailsSchema.safeParse(body.conflict);
      if (!parsed.success) {
        if (code === 'push_row_invalid') return 'rethrow';
        await unstructuredConflict(ctx, outbox, cause as ClientError, signal);
        return 'rethrow';
      }
      const details =
        code === 'push_row_invalid' && !parsed.data.reason
          ? { ...parsed.data, reason: 'invalid_value' as const }
          : parsed.data;
      await resolveConflict(ctx, details, signal);
      return { row: `${parsed.data.table}:${canonicalJson(parsed.data.key)}` };
    }
    case 'history_pruned': {
      const fresh = await ctx.runner.read((db) => readOutbox(db), signal);
      if (fresh.state === 'committed_remote' || isCommittedBundleFetchError(cause)) {
        // Our bundle is committed but no longer retained: rebuild from a snapshot (which holds
        // it), keep the local edits made since the freeze, and move the source floor past it.
        await rebuild(
          ctx,
          {
            phase: 'recover',
            preserve: 'rebase',
            dropCommittedOutbox: true,
            advanceSourceFloor: fresh.sourceBundleId + 1,
          },
          signal,
        );
        return 'committed';
      }
      await enterSourceRecovery(ctx, 'history_pruned', '', signal);
      throw recoveryError('history_pruned', cause);
    }
    case 'source_sequence_out_of_order':
    case 'source_sequence_changed':
      await enterSourceRecovery(ctx, code, '', signal);
      throw recoveryError(code, cause);
    case 'source_retired':
      await enterSourceRecovery(
        ctx,
        'source_retired',
        typeof body.replaced_by_source_id === 'string' ? body.replaced_by_source_id : '',
        signal,
      );
      throw recoveryError('source_retired', cause);
    case 'initialization_expired':
    case 'initialization_stale':
      await ctx.runner.tx((db) => dropSeedLease(db), signal);
      ctx.hooks.bindingReset();
      throw new ClientError(
        'OVERSYNC_CLIENT_RECONNECT_REQUIRED',
        `seed lease lost (${code}): reconnect required`,
        {
          cause,
          details: { serverCode: code },
        },
      );
    default:
      return 'rethrow';
  }
}

export async function enterSourceRecovery(
  ctx: SyncContext,
  reason: string,
  replacement: string,
  signal?: AbortSignal,
): Promise<void> {
  await ctx.runner.tx((db) => markSourceRecovery(db, reason, replacement), signal);
}

/**
 * A 409 push_conflict without details cannot be resolved row by row. The reference client
 * retries the same frozen bundle forever; here the outbox is kept for a bounded number of
 * attempts, after which the intents are rebased onto a fresh snapshot (local edits win) so
 * the next push can make progress. Nothing local is lost either way.
 */
async function unstructuredConflict(
  ctx: SyncContext,
  outbox: OutboxState,
  cause: ClientError,
  signal?: AbortSignal,
): Promise<void> {
  const count = await ctx.runner.tx((db) => countUnstructuredConflict(db), signal);
  if (count < ctx.cfg.maxUnstructuredConflicts) {
    throw new ClientError('OVERSYNC_CLIENT_PUSH_CONFLICT', 'push conflict without details', {
      cause,
      details: { attempts: count, sourceBundleId: outbox.sourceBundleId },
    });
  }
  ctx.logger.warn(
    { attempts: count },
    'oversync client: rebasing local intents after repeated opaque conflicts',
  );
  await rebuild(ctx, { phase: 'recover', preserve: 'rebase' }, signal);
  throw new ClientError(
    'OVERSYNC_CLIENT_PUSH_CONFLICT',
    'push conflict without details; local intents were rebased onto a fresh snapshot',
    { cause, details: { attempts: count, rebased: true } },
  );
}
