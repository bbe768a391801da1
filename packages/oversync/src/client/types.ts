import type { WirePayload } from './internal/codec.js';

export type PushOutcome = 'committed' | 'no_change' | 'skipped_paused';
export type RemoteOutcome =
  | 'applied_incremental'
  | 'already_at_target'
  | 'applied_snapshot'
  | 'skipped_paused';

export interface RestoreSummary {
  readonly bundleSeq: number;
  readonly rowCount: number;
}

export interface PushReport {
  readonly outcome: PushOutcome;
  readonly bundleSeq?: number;
  readonly rowCount?: number;
  /** Conflicts resolved during this call. */
  readonly conflictsResolved: number;
}

export interface PullReport {
  readonly outcome: RemoteOutcome;
  readonly bundlesApplied: number;
  readonly rowsApplied: number;
  readonly lastBundleSeqSeen: number;
  readonly restore?: RestoreSummary;
}

export interface RebuildReport {
  readonly outcome: 'applied_snapshot' | 'skipped_paused';
  readonly restore?: RestoreSummary;
  readonly rotatedSourceId?: string;
}

export type AttachStatus = 'connected' | 'retry_later';
export type AttachOutcome =
  | 'resumed_attached_state'
  | 'started_empty'
  | 'seeded_from_local'
  | 'used_remote_state';

export interface AttachResult {
  readonly status: AttachStatus;
  readonly outcome?: AttachOutcome;
  readonly retryAfterSeconds?: number;
  readonly restore?: RestoreSummary;
}

export interface DetachResult {
  readonly outcome: 'detached' | 'blocked_unsynced_data';
  readonly pendingRowCount: number;
}

export interface PendingStatus {
  readonly dirtyRows: number;
  readonly outboxRows: number;
  readonly pendingInitialization: boolean;
  readonly total: number;
  readonly blocksDetach: boolean;
}

export interface SyncStatus {
  readonly authority: 'pending_local_seed' | 'authoritative_empty' | 'authoritative_materialized';
  readonly pending: PendingStatus;
  readonly lastBundleSeqSeen: number;
  readonly userId: string;
  readonly sourceId: string;
  readonly connected: boolean;
  readonly rebuildRequired: boolean;
  readonly sourceRecoveryRequired: boolean;
}

export interface SyncReport {
  readonly push: PushReport;
  readonly pull: PullReport;
  readonly status: SyncStatus;
}

export interface SyncThenDetachResult {
  readonly lastSync?: SyncReport;
  readonly detach: DetachResult;
  readonly syncRounds: number;
  readonly remainingPendingRowCount: number;
  readonly success: boolean;
}

export type ProgressPhase = 'hydrate' | 'recover' | 'pull' | 'push';
export interface ProgressEvent {
  readonly phase: ProgressPhase;
  readonly done: number;
  /** Total when known (snapshots, pushes); for pulls, the rows of the pages fetched so far. */
  readonly total: number;
}

export interface AppliedEvent {
  readonly kind: 'pull' | 'replay' | 'snapshot' | 'conflict';
  readonly tables: readonly string[];
  readonly rows: number;
  readonly lastBundleSeqSeen: number;
}

/** What a resolver sees about one push conflict. */
export interface ConflictContext {
  readonly schema: string;
  readonly table: string;
  /** Wire key, e.g. `{ id: '…' }`. */
  readonly key: Readonly<Record<string, string>>;
  readonly localOp: 'INSERT' | 'UPDATE' | 'DELETE';
  /** The frozen local intent in local form (BLOBs as lowercase hex); null for DELETE. */
  readonly localPayload: Readonly<Record<string, unknown>> | null;
  readonly baseRowVersion: number;
  /** 0 when the server has no row state for the key. */
  readonly serverRowVersion: number;
  readonly serverRowDeleted: boolean;
  /** The live server row in wire form (UUIDs dashed, bytea base64), or null. */
  readonly serverRow: Readonly<WirePayload> | null;
  /** The live server row converted to local form, or null. */
  readonly serverRowLocal: Readonly<Record<string, unknown>> | null;
}

export type ConflictResolution =
  | { readonly kind: 'accept-server' }
  | { readonly kind: 'keep-local' }
  /** A full row in local form (every column, lowercase keys, BLOBs as hex). */
  | { readonly kind: 'merged'; readonly payload: Readonly<Record<string, unknown>> };

export type ConflictResolver = (ctx: ConflictContext) => ConflictResolution | Promise<ConflictResolution>;

export interface ClientEvents {
  progress: ProgressEvent;
  applied: AppliedEvent;
  conflict: { readonly context: ConflictContext; readonly resolution: ConflictResolution };
  error: { readonly error: unknown; readonly loop: 'upload' | 'download' };
  closed: Record<string, never>;
}
