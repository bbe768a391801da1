/** A row as the server sends it (column name to wire value). */
type WirePayload = Record<string, unknown>;

/**
 * What a push did: `committed` (one bundle was uploaded, committed and written back), `no_change` (nothing to
 * upload, or conflict resolution left nothing), `skipped_paused` (uploads are paused, see `pauseUploads()`).
 */
export type PushOutcome = 'committed' | 'no_change' | 'skipped_paused';
/**
 * What a pull did: `applied_incremental` (new bundles were applied), `already_at_target` (the device was
 * already at the server's stable bundle), `applied_snapshot` (the server had pruned the history the device
 * needed, so the device was rebuilt from a snapshot instead), `skipped_paused` (downloads are paused, see
 * `pauseDownloads()`).
 */
export type RemoteOutcome =
  | 'applied_incremental'
  | 'already_at_target'
  | 'applied_snapshot'
  | 'skipped_paused';

/**
 * A snapshot that replaced the device's synced data: the server bundle it reflects (`bundleSeq`, now the
 * device's checkpoint) and how many rows it held.
 */
export interface RestoreSummary {
  readonly bundleSeq: number;
  readonly rowCount: number;
}

/**
 * The result of `pushPending()` (and the push half of `sync()`). `bundleSeq` and `rowCount` are the committed
 * bundle's sequence number and row count, when the push committed one.
 */
export interface PushReport {
  readonly outcome: PushOutcome;
  readonly bundleSeq?: number;
  readonly rowCount?: number;
  /** Conflicts resolved during this call. */
  readonly conflictsResolved: number;
}

/**
 * The result of `pullToStable()` (and the pull half of `sync()`): the bundles and rows applied, and
 * `lastBundleSeqSeen`, the device's checkpoint afterwards (-1 when skipped). `restore` is set when the pull
 * fell back to a snapshot (`applied_snapshot`).
 */
export interface PullReport {
  readonly outcome: RemoteOutcome;
  readonly bundlesApplied: number;
  readonly rowsApplied: number;
  readonly lastBundleSeqSeen: number;
  readonly restore?: RestoreSummary;
}

/**
 * The result of `rebuild()`. `restore` describes the snapshot applied; `rotatedSourceId` is the device's new
 * source id when the rebuild recovered a refused source by replacing it.
 */
export interface RebuildReport {
  readonly outcome: 'applied_snapshot' | 'skipped_paused';
  readonly restore?: RestoreSummary;
  readonly rotatedSourceId?: string;
}

/**
 * Whether `attach()` bound the device to the user's scope (`connected`) or the server asked it to try again
 * later (`retry_later`: another device is initializing the scope).
 */
export type AttachStatus = 'connected' | 'retry_later';
/**
 * How a connected `attach()` got there: `resumed_attached_state` (already attached to this user: no network
 * call), `started_empty` (the scope was new and the device had no local rows), `seeded_from_local` (the scope
 * was new: the device's local rows become its first state with the next push), `used_remote_state` (the scope
 * already existed: the device's local rows were replaced by a snapshot of the server's).
 */
export type AttachOutcome =
  | 'resumed_attached_state'
  | 'started_empty'
  | 'seeded_from_local'
  | 'used_remote_state';

/**
 * The result of `attach(userId)`. `outcome` is set when `status` is `connected`; `retryAfterSeconds` when it
 * is `retry_later`; `restore` when the device was hydrated from a snapshot (`used_remote_state`).
 */
export interface AttachResult {
  readonly status: AttachStatus;
  readonly outcome?: AttachOutcome;
  readonly retryAfterSeconds?: number;
  readonly restore?: RestoreSummary;
}

/**
 * The result of `detach()`: `detached` (the user's synced data was wiped from the device and its
 * source id rotated), or `blocked_unsynced_data` (rows not yet pushed: nothing was changed; push
 * them, or pass `force`). `pendingRowCount` is the pending count seen.
 */
export interface DetachResult {
  readonly outcome: 'detached' | 'blocked_unsynced_data';
  readonly pendingRowCount: number;
}

/**
 * What the device has not yet synced: `dirtyRows` (local changes not yet frozen into a push), `outboxRows`
 * (rows of a frozen push not yet committed and written back), `pendingInitialization` (the device holds the
 * scope's initialization lease and has not committed its seed push yet). `total` adds them up (the lease
 * counts 1); `blocksDetach` is true when `total > 0`.
 */
export interface PendingStatus {
  readonly dirtyRows: number;
  readonly outboxRows: number;
  readonly pendingInitialization: boolean;
  readonly total: number;
  readonly blocksDetach: boolean;
}

/**
 * The device's sync state as stored in its database, from `readStatus()` (the live, in-memory view
 * is `client.status`, a {@link ClientStatus}). `authority`: `pending_local_seed` (the device is seeding a new
 * scope with its local rows), `authoritative_empty` (synced, no live rows), `authoritative_materialized`
 * (synced, with rows). `lastBundleSeqSeen` is the checkpoint (the last server bundle applied), `userId` the
 * attached user ('' when none), `sourceId` the device's sync source id, `connected` whether `attach()`
 * succeeded in this process. `rebuildRequired` and `sourceRecoveryRequired` say push and pull are blocked
 * until `rebuild()` succeeds.
 */
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

/**
 * The failure `client.status.lastError` holds: the error's stable `code` (one of `CLIENT_ERROR_CODES`
 * for the client's own errors; a driver's code such as `SQLITE_BUSY` otherwise), its message,
 * which operation failed and when.
 */
export interface StatusError {
  /** The error's stable code. */
  readonly code: string;
  /** The error's message. */
  readonly message: string;
  /** The operation that failed (a background loop's: `push` or `pull`). */
  readonly operation: 'attach' | 'push' | 'pull' | 'rebuild' | 'sync';
  /** When it failed. */
  readonly at: Date;
}

/**
 * `client.status`: the client's sync state in memory, one object for the client's lifetime,
 * updated in place (each change also emits a `status` event carrying this same object; copy it to
 * keep a past state). No read of the database is needed to look at it.
 *
 * - `connected`: attached in this process, and the server answered the last request (a failed
 *   `fetch`, or a 502/503/504 from a proxy in front of it, makes it false until one succeeds).
 * - `uploading`: a push (explicit, of `sync()`, or of the background uploader) is running.
 * - `downloading`: a pull, a rebuild, or the snapshot of an `attach()` is running.
 * - `pendingChanges`: local changes not yet on the server (dirty rows plus the rows of a frozen
 *   push). Kept current on every write of the client's connection (a TEMP trigger, see the
 *   README), and after each of the client's operations and each `notifyLocalChange()`.
 * - `lastPushAt` / `lastPullAt`: when the last push (committed or with nothing to upload) and the
 *   last pull, rebuild or hydrate succeeded; null until then (not persisted across restarts).
 * - `lastError`: the last failure of an attach, push, pull, rebuild or sync (background ones
 *   included), cleared by the next push or pull that succeeds. Aborts are not failures.
 */
export interface ClientStatus {
  /** Attached in this process, and the server answered the last request. */
  readonly connected: boolean;
  /** A push is running. */
  readonly uploading: boolean;
  /** A pull, a rebuild or an attach's snapshot is running. */
  readonly downloading: boolean;
  /** Dirty rows plus frozen push rows: local changes not on the server yet. */
  readonly pendingChanges: number;
  /** When the last push succeeded (null: none in this process). */
  readonly lastPushAt: Date | null;
  /** When the last pull, rebuild or hydrate succeeded (null: none in this process). */
  readonly lastPullAt: Date | null;
  /** The last failure, until a push or pull succeeds. */
  readonly lastError: StatusError | null;
}

/** Parameters of a watched statement: positional (an array) or named (an object), as better-sqlite3 binds them. */
export type WatchParams = readonly unknown[] | Readonly<Record<string, unknown>>;

/** Options of `client.watch()` and `watchQuery()`. */
export interface WatchOptions {
  /** Ends the watch: the iteration ends quietly, callbacks stop. */
  readonly signal?: AbortSignal | undefined;
  /**
   * How long to wait after a change before re-running the query (default
   * `DEFAULT_LIVE_QUERY_THROTTLE_MS`, 30 ms): every change within it is served by one re-run.
   */
  readonly throttleMs?: number | undefined;
}

/**
 * The callback form of a watch: `onResult` gets the first result and then every result that
 * differs from the previous one; `onError` gets the error that ended the watch (a statement that
 * fails to prepare, or is not a read-only query, a read that failed, or a closed client).
 */
export interface WatchHandlers<R> {
  /** Gets the first result, then each result that differs from the one before. */
  readonly onResult: (rows: R[]) => void;
  /** Gets the error that ended the watch. */
  readonly onError?: ((error: unknown) => void) | undefined;
}

/** The result of `sync()`: its push, its pull, and the status afterwards. */
export interface SyncReport {
  readonly push: PushReport;
  readonly pull: PullReport;
  readonly status: SyncStatus;
}

/**
 * The result of `syncThenDetach()`: up to 3 rounds of `sync()` then `detach()`, stopping when detached or
 * when the pending count stops shrinking. `success` is true when the device ended detached;
 * `remainingPendingRowCount` is what still blocked it (0 on success).
 */
export interface SyncThenDetachResult {
  readonly lastSync?: SyncReport;
  readonly detach: DetachResult;
  readonly syncRounds: number;
  readonly remainingPendingRowCount: number;
  readonly success: boolean;
}

/**
 * The long operation a {@link ProgressEvent} reports on: `hydrate` (the snapshot of `attach()` or
 * `rebuild()`), `recover` (a snapshot rebuild after the server refused the device's history or source),
 * `pull` (rows of pulled bundles), `push` (rows uploaded and written back).
 */
export type ProgressPhase = 'hydrate' | 'recover' | 'pull' | 'push';
/** A `progress` event (and the `onProgress` option): how far a long operation is, in rows. */
export interface ProgressEvent {
  readonly phase: ProgressPhase;
  readonly done: number;
  /** Total when known (snapshots, pushes); for pulls, the rows of the pages fetched so far. */
  readonly total: number;
  /**
   * Which part of the phase the figures count. Snapshots (`hydrate`, `recover`): `download`
   * (rows fetched and staged) then `apply` (rows moved into the app's tables; the app sees them
   * all at once when it ends). Pushes: `upload` (rows sent) then `apply` (committed rows written
   * back). Rows to go = `total - done`.
   */
  readonly stage?: 'download' | 'upload' | 'apply';
}

/**
 * An `applied` event: server data was written to the local database. `kind`: `pull` (a pulled bundle),
 * `replay` (the device's own committed push, written back), `snapshot` (a snapshot replaced the synced data),
 * `conflict` (a conflict resolution wrote the server's side or a merge). `tables` are the tables touched,
 * `rows` the rows written; `lastBundleSeqSeen` is the checkpoint afterwards (-1 for `conflict`).
 */
export interface AppliedEvent {
  readonly kind: 'pull' | 'replay' | 'snapshot' | 'conflict';
  readonly tables: readonly string[];
  readonly rows: number;
  readonly lastBundleSeqSeen: number;
}

/**
 * Why a local intent conflicted. `row_version`: the reference's base-version check (someone else
 * changed or deleted the row). The others: the server's database refused the row's data
 * (`foreign_key`: it references a parent the server does not have, or it is a parent that still
 * has children there; `unique`, `not_null`, `check`, `exclusion`; `invalid_value`: a value its
 * column type refuses). `discarded_by_remote_state`: attaching to a scope that already had data
 * replaced local rows that were never pushed. `deleted_by_cascade`: the server committed the push
 * but its own ON DELETE CASCADE (of another row of the same bundle, e.g. a deleted ancestor list
 * that another device had moved this row's parent under) removed the row in the same commit.
 */
export type ConflictReason =
  | 'row_version'
  | 'foreign_key'
  | 'unique'
  | 'not_null'
  | 'check'
  | 'exclusion'
  | 'invalid_value'
  | 'deleted_by_cascade'
  | 'discarded_by_remote_state';

/**
 * How a resolution was applied. `resolver`: as the resolver returned it. `newer-local-edit`: a local
 * edit made after the push kept the local side. `keep-local-not-applicable`: keep-local cannot
 * succeed for this reason (the data itself is refused), so the server's state was taken.
 * `parent-unavailable`: keep-local of a child whose parent the device no longer knows; the child
 * followed its parent. `parent-recreated`: keep-local of a child re-created its parent.
 * `server-cascade`: the server's cascade removed the pushed row in the same commit.
 * `remote-state`: the local rows were replaced by the scope's remote state.
 */
export type ConflictRule =
  | 'resolver'
  | 'newer-local-edit'
  | 'keep-local-not-applicable'
  | 'parent-unavailable'
  | 'parent-recreated'
  | 'server-cascade'
  | 'remote-state';

/** The parent row a `foreign_key` conflict is about, as the server reported it. */
export interface ConflictReference {
  readonly table: string;
  /** Wire key of the parent. */
  readonly key: Readonly<Record<string, string>>;
  /** The parent's version on the server (0: it never existed there). */
  readonly rowVersion: number;
  readonly deleted: boolean;
  /** Whether the device still knows the parent's last payload, so keep-local can re-create it. */
  readonly recoverable: boolean;
}

/** What a resolver sees about one push conflict. */
export interface ConflictContext {
  /** Why the push was refused for this row (`row_version` for the reference's version check). */
  readonly reason: ConflictReason;
  /** The violated constraint's name, when the server named one. */
  readonly constraint?: string;
  /** The refused column (`not_null`, `invalid_value`), when the server named one. */
  readonly column?: string;
  /** For `foreign_key`: the missing parent. */
  readonly references?: ConflictReference;
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

/**
 * What a {@link ConflictResolver} decides: `accept-server` (take the server's row, drop the local change),
 * `keep-local` (keep the local change and push it again on top of the server's version; where it cannot
 * succeed, the server's state is taken, see {@link ConflictRule}), or `merged` (write `payload` locally and
 * push it on top of the server's version).
 */
export type ConflictResolution =
  | { readonly kind: 'accept-server' }
  | { readonly kind: 'keep-local' }
  /** A full row in local form (every column, lowercase keys, BLOBs as hex). */
  | { readonly kind: 'merged'; readonly payload: Readonly<Record<string, unknown>> };

/**
 * Decides each push conflict (the `resolver` option); see the built-in `serverWinsResolver` (the
 * default) and `clientWinsResolver`. It may be async. A resolver that throws or returns an invalid
 * resolution (an unknown kind, or a `merged` payload without exactly the table's columns) fails the
 * push with `OVERSYNC_CLIENT_INVALID_CONFLICT_RESOLUTION`.
 */
export type ConflictResolver = (ctx: ConflictContext) => ConflictResolution | Promise<ConflictResolution>;

/** One entry of the device's conflict log (`client.conflicts()`), written with the plan it records. */
export interface ConflictRecord {
  readonly id: number;
  readonly schema: string;
  readonly table: string;
  readonly key: Readonly<Record<string, string>>;
  readonly reason: ConflictReason;
  readonly localOp: 'INSERT' | 'UPDATE' | 'DELETE';
  /** The local intent (local form), null for a DELETE. */
  readonly localPayload: Readonly<Record<string, unknown>> | null;
  readonly baseRowVersion: number;
  readonly serverRowVersion: number;
  readonly serverRowDeleted: boolean;
  /** The server's row (wire form) at the time, or null. */
  readonly serverRow: Readonly<Record<string, unknown>> | null;
  /** The resolution applied (after the rule). */
  readonly resolution: ConflictResolution['kind'];
  readonly rule: ConflictRule;
  /** True when the local intent did not survive. */
  readonly localLost: boolean;
  readonly details: Readonly<Record<string, unknown>>;
  /** When it was recorded (UTC, ISO 8601). */
  readonly at: string;
}

/**
 * The events of `client.on(event, listener)` and their payloads: `progress` ({@link ProgressEvent}),
 * `applied` ({@link AppliedEvent}), `conflict` (one resolved push conflict), `error` (a failure of the
 * background `upload` or `download` loop, which backs off and tries again), `status` (`client.status`
 * changed; the payload is that same object), `closed` (the client closed).
 */
export interface ClientEvents {
  progress: ProgressEvent;
  status: ClientStatus;
  applied: AppliedEvent;
  conflict: {
    readonly context: ConflictContext;
    readonly resolution: ConflictResolution;
    /** The conflict log entry written with the plan. */
    readonly record: ConflictRecord;
  };
  error: { readonly error: unknown; readonly loop: 'upload' | 'download' };
  closed: Record<string, never>;
}

/** Which entries `client.conflicts()` returns. */
export interface ConflictQuery {
  /** Only entries with an id greater than this. */
  readonly afterId?: number | undefined;
  /** Only entries whose local intent was lost. */
  readonly lostOnly?: boolean | undefined;
  readonly table?: string | undefined;
  /** At most this many entries (default 1000), oldest first. */
  readonly limit?: number | undefined;
}
