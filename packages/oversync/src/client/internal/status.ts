/**
 * `client.status`: one object, updated in place, and a `status` event per change (see
 * `ClientStatus` in types.ts for what each field means). The facade reports what happens
 * (operations starting and ending, HTTP answers, pending counts); this file keeps the object.
 * `readSyncStatus` is the other status, `readStatus()`'s: the stored state, read from the database.
 */
import { isClientError } from '../errors.js';
import type { ClientStatus, StatusError, SyncStatus } from '../types.js';
import type { SqliteDb } from '../writer-types.js';
import { hasLiveRows, readAttachment, readOperation, readPending } from './local-store.js';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The code a failure is reported under in `lastError`. */
function codeOf(error: unknown): string {
  if (isClientError(error)) return error.code;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code !== '' ? code : 'UNKNOWN';
}

export class StatusTracker {
  readonly status: ClientStatus;
  readonly #s: Mutable<ClientStatus>;
  readonly #emit: (s: ClientStatus) => void;
  #lastErrorCause: unknown;

  constructor(emit: (s: ClientStatus) => void) {
    this.#s = {
      connected: false,
      uploading: false,
      downloading: false,
      pendingChanges: 0,
      lastPushAt: null,
      lastPullAt: null,
      lastError: null,
    };
    this.status = this.#s;
    this.#emit = emit;
  }

  /** Applies the fields that differ; one `status` event when any did. */
  set(patch: Partial<ClientStatus>): void {
    const s = this.#s as Record<string, unknown>;
    let changed = false;
    for (const [k, v] of Object.entries(patch)) {
      if (s[k] !== v) {
        s[k] = v;
        changed = true;
      }
    }
    if (changed) this.#emit(this.status);
  }

  /** Records a failure as `lastError` (once per error object: a background error is seen twice). */
  failed(error: unknown, operation: StatusError['operation']): void {
    if (isClientError(error, 'OVERSYNC_CLIENT_ABORTED') || isClientError(error, 'OVERSYNC_CLIENT_CLOSED'))
      return;
    if (error === this.#lastErrorCause) return;
    this.#lastErrorCause = error;
    const message = error instanceof Error ? error.message : String(error);
    this.set({ lastError: Object.freeze({ code: codeOf(error), message, operation, at: new Date() }) });
  }

  /** A push or pull succeeded: its time, and `lastError` cleared. */
  succeeded(kind: 'push' | 'pull'): void {
    this.#lastErrorCause = undefined;
    this.set(
      kind === 'push'
        ? { lastPushAt: new Date(), lastError: null }
        : { lastPullAt: new Date(), lastError: null },
    );
  }
}

/** `readStatus()`: the device's stored sync state (inside a read; `connected` is the facade's). */
export function readSyncStatus(db: SqliteDb, connected: boolean): SyncStatus {
  const pending = readPending(db);
  const att = readAttachment(db);
  const op = readOperation(db);
  const live = hasLiveRows(db);
  return {
    authority: pending.pendingInitialization
      ? 'pending_local_seed'
      : live
        ? 'authoritative_materialized'
        : 'authoritative_empty',
    pending: { ...pending, blocksDetach: pending.total > 0 },
    lastBundleSeqSeen: att.lastBundleSeqSeen,
    userId: att.bindingState === 'attached' ? att.attachedUserId : '',
    sourceId: att.currentSourceId,
    connected,
    rebuildRequired: att.rebuildRequired,
    sourceRecoveryRequired: op.kind === 'source_recovery',
  } as const;
}
