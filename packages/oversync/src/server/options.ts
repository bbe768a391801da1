import { INVALID_LOGGER_MESSAGE, isLogger, type Logger } from '@x/core';
import { z } from 'zod';
import { parseOversyncOptions } from '../shared/option-issues.js';
import type { SyncDatabase } from './database.js';
import { SyncServerError } from './errors.js';
import { SCOPE_COLUMN } from './internal/topology.js';

/** The default logger: drops everything (`@x/core`'s). */
export { SILENT_LOGGER } from '@x/core';

/** Default `maxSupportedSchemaVersion`: the highest schema version the service accepts. */
export const DEFAULT_MAX_SUPPORTED_SCHEMA_VERSION = 1;
/** Default `appName` (announced by capabilities and status): none. */
export const DEFAULT_APP_NAME = '';
/** Default `limits.defaultRowsPerPushChunk`: the push chunk size the server suggests. */
export const DEFAULT_ROWS_PER_PUSH_CHUNK = 1000;
/** Default `limits.maxRowsPerPushChunk`: the largest push chunk accepted. */
export const DEFAULT_MAX_ROWS_PER_PUSH_CHUNK = 5000;
/** Default `limits.pushSessionTtlMs`: a push session not committed by then expires (15 minutes). */
export const DEFAULT_PUSH_SESSION_TTL_MS = 15 * 60_000;
/** Default `limits.initializationLeaseTtlMs`: how long one device may hold a scope's initialization (15 minutes). */
export const DEFAULT_INITIALIZATION_LEASE_TTL_MS = 15 * 60_000;
/** Default `limits.defaultRowsPerCommittedBundleChunk`: the page size of committed-bundle rows. */
export const DEFAULT_ROWS_PER_COMMITTED_BUNDLE_CHUNK = 1000;
/** Default `limits.maxRowsPerCommittedBundleChunk`: the largest page of committed-bundle rows. */
export const DEFAULT_MAX_ROWS_PER_COMMITTED_BUNDLE_CHUNK = 5000;
/** Default `limits.defaultRowsPerSnapshotChunk`: the page size of snapshot chunks. */
export const DEFAULT_ROWS_PER_SNAPSHOT_CHUNK = 1000;
/** Default `limits.maxRowsPerSnapshotChunk`: the largest snapshot chunk. */
export const DEFAULT_MAX_ROWS_PER_SNAPSHOT_CHUNK = 5000;
/** Default `limits.snapshotSessionTtlMs`: a snapshot session expires after this long (15 minutes). */
export const DEFAULT_SNAPSHOT_SESSION_TTL_MS = 15 * 60_000;
/**
 * Default `limits.snapshotPipelineMinRows`: 0, off. Set, a snapshot session of at least this many
 * rows is answered once its row and byte counts are known and its rows are written in the
 * background while the client already pages (see snapshot.ts; 20,000 is a sensible value); smaller
 * ones are written before the answer. Off by default because on a 2-core machine running server
 * and client (client-responsive.bench.ts, 1M rows, load 1.0-1.5) the background build, which costs
 * more CPU than the one-statement materialisation and competes with the client for it, made the
 * whole hydrate slower (17.2 s vs 15.1 s) although the create answered in 1.4 s instead of 5.1 s.
 */
export const DEFAULT_SNAPSHOT_PIPELINE_MIN_ROWS = 0;
/**
 * Default `limits.snapshotBuildRangeRows`: the rows of each uuid-keyed table a background snapshot
 * build writes first, by a key range of the indexes, so the first pages are there soon (the rest
 * follows in one sorted pass, committed 4,096 rows at a time).
 */
export const DEFAULT_SNAPSHOT_BUILD_RANGE_ROWS = 16_384;
/**
 * Default `limits.snapshotChunkWaitMs`: how long a snapshot chunk whose rows are still being written
 * waits for them before it answers `503 service_unavailable` (retryable).
 */
export const DEFAULT_SNAPSHOT_CHUNK_WAIT_MS = 30_000;
/** Default `limits.retainedBundlesPerUser`: committed bundles kept per scope before older ones are pruned. */
export const DEFAULT_RETAINED_BUNDLES_PER_USER = 10_000;
/**
 * Default `limits.retentionPruneBatchSize`: the most bundles one commit prunes (how far it moves the
 * scope's retained floor), so a lowered retention catches up over several commits.
 */
export const DEFAULT_RETENTION_PRUNE_BATCH_SIZE = 1000;
/** Fixed by the protocol: `GET /sync/pull` default and maximum `max_bundles`. */
export const DEFAULT_BUNDLES_PER_PULL = 1000;
/** Fixed by the protocol: the largest `max_bundles` of `GET /sync/pull`. */
export const MAX_BUNDLES_PER_PULL = 5000;
/**
 * A pull page stops adding bundles once it holds this many rows (at least one bundle is always
 * returned, `has_more` says the rest follows), so `max_bundles=5000` cannot make one request load
 * millions of rows.
 */
export const DEFAULT_MAX_ROWS_PER_PULL = 10_000;
/** Default `bundleChangeWatch.notifyChannel`: the PostgreSQL NOTIFY channel of committed bundles. */
export const DEFAULT_NOTIFY_CHANNEL = 'oversync_bundle_change_v1';
/**
 * Default `bundleChangeWatch.heartbeatIntervalMs`: how often a `GET /sync/watch` stream sends a
 * heartbeat comment, in milliseconds (25 s).
 */
export const DEFAULT_WATCH_HEARTBEAT_INTERVAL_MS = 25_000;
/** The fastify plugin's default `bodyLimit`: 32 MiB. */
export const DEFAULT_BODY_LIMIT_BYTES = 32 * 1024 * 1024;
/**
 * Default `closeTimeoutMs`: how long `close()` lets in-flight operations finish before aborting
 * them, in milliseconds (30 s).
 */
export const DEFAULT_CLOSE_TIMEOUT_MS = 30_000;
/**
 * Default `limits.requestStatementTimeoutMs`: the `statement_timeout`, in milliseconds (5 s), of each
 * request transaction whose cost its parameters bound (all but a push commit and a snapshot's
 * creation); 0 turns it off. A statement cut by it is answered `503 service_unavailable`.
 */
export const DEFAULT_REQUEST_STATEMENT_TIMEOUT_MS = 5_000;
/**
 * The sync key of a registered table that names none: `id`, as on the client
 * (`@x/oversync/client`'s DEFAULT_SYNC_KEY_COLUMNS), so a table list written once serves both.
 */
export const DEFAULT_SYNC_KEY_COLUMNS: readonly string[] = Object.freeze(['id']);

/**
 * Default `registeredTables[].backendWrites`: off, so a write to a registered table without the
 * service's bundle API is refused (`write to registered table … requires oversync sync bundle context`).
 */
export const DEFAULT_BACKEND_WRITES = false;

/** Per-stage timing of a hot path (only pull emits, as in the reference). */
export interface StageTiming {
  operation: string;
  stage: string;
  durationMs: number;
  count: number;
  attempt: number;
  error: boolean;
}

/** pino-compatible logger: the contract every `@x` package shares, from `@x/core`. */
export type SyncLogger = Logger;

const positiveInt = (d: number) => z.number().int().positive().default(d);
const nonNegInt = (d: number) => z.number().int().nonnegative().default(d);

/** The schema of `limits` (each field optional, with the default above). */
export const limitsSchema = z
  .object({
    maxRowsPerBundle: nonNegInt(0),
    maxBytesPerBundle: nonNegInt(0),
    defaultRowsPerPushChunk: positiveInt(DEFAULT_ROWS_PER_PUSH_CHUNK),
    maxRowsPerPushChunk: positiveInt(DEFAULT_MAX_ROWS_PER_PUSH_CHUNK),
    pushSessionTtlMs: positiveInt(DEFAULT_PUSH_SESSION_TTL_MS),
    initializationLeaseTtlMs: positiveInt(DEFAULT_INITIALIZATION_LEASE_TTL_MS),
    defaultRowsPerCommittedBundleChunk: positiveInt(DEFAULT_ROWS_PER_COMMITTED_BUNDLE_CHUNK),
    maxRowsPerCommittedBundleChunk: positiveInt(DEFAULT_MAX_ROWS_PER_COMMITTED_BUNDLE_CHUNK),
    defaultRowsPerSnapshotChunk: positiveInt(DEFAULT_ROWS_PER_SNAPSHOT_CHUNK),
    maxRowsPerSnapshotChunk: positiveInt(DEFAULT_MAX_ROWS_PER_SNAPSHOT_CHUNK),
    snapshotSessionTtlMs: positiveInt(DEFAULT_SNAPSHOT_SESSION_TTL_MS),
    maxRowsPerSnapshotSession: nonNegInt(0),
    maxRowsPerPull: positiveInt(DEFAULT_MAX_ROWS_PER_PULL),
    maxBytesPerSnapshotSession: nonNegInt(0),
    /** 0 (default) = never: every snapshot session is written before the create answers. */
    snapshotPipelineMinRows: nonNegInt(DEFAULT_SNAPSHOT_PIPELINE_MIN_ROWS),
    snapshotBuildRangeRows: positiveInt(DEFAULT_SNAPSHOT_BUILD_RANGE_ROWS),
    snapshotChunkWaitMs: positiveInt(DEFAULT_SNAPSHOT_CHUNK_WAIT_MS),
    retainedBundlesPerUser: positiveInt(DEFAULT_RETAINED_BUNDLES_PER_USER),
    retentionPruneBatchSize: positiveInt(DEFAULT_RETENTION_PRUNE_BATCH_SIZE),
    /** 0 = off. Bounds lock waits in push create/chunk/commit (`SET LOCAL lock_timeout`). */
    uploadLockTimeoutMs: nonNegInt(0),
    /**
     * 0 = off. `statement_timeout` of every request transaction whose cost its parameters bound
     * (all but push commit and snapshot creation); a statement cut by it is `503 service_unavailable`.
     */
    requestStatementTimeoutMs: nonNegInt(DEFAULT_REQUEST_STATEMENT_TIMEOUT_MS),
  })
  .strict();

const registeredTableSchema = z
  .object({
    schema: z.string().default('public'),
    table: z.string().min(1),
    /** The one column (uuid or text) keying the table's rows in the protocol (default `['id']`). */
    syncKeyColumns: z.array(z.string()).default(() => [...DEFAULT_SYNC_KEY_COLUMNS]),
    /**
     * Backend writes that sync (default {@link DEFAULT_BACKEND_WRITES}, off): an ordinary transaction
     * from any SQL client that writes this table's rows without the service's bundle API becomes one
     * committed bundle per affected scope (`_sync_scope_id`) at COMMIT. Off, such writes are refused
     * as before. Opt in every table an FK cascade reaches from an opted-in one.
     */
    backendWrites: z.boolean().default(DEFAULT_BACKEND_WRITES),
  })
  .strict()
  .superRefine((t, ctx) => {
    // The checks bootstrap would make without the database, made here so a list that cannot work
    // is refused at construction (bootstrap normalizes the same way: trim, lowercase, dedupe).
    const keys = [...new Set(t.syncKeyColumns.map((c) => c.trim().toLowerCase()).filter((c) => c !== ''))];
    if (keys.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['syncKeyColumns'],
        message: `must name exactly one sync key column (a uuid or text column; omit it for ${JSON.stringify(DEFAULT_SYNC_KEY_COLUMNS)}), got ${JSON.stringify(t.syncKeyColumns)}`,
      });
    } else if (keys[0] === SCOPE_COLUMN) {
      ctx.addIssue({
        code: 'custom',
        path: ['syncKeyColumns'],
        message: `${SCOPE_COLUMN} is the scope column and cannot be the sync key`,
      });
    }
  });

const dbSchema = z.custom<SyncDatabase>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as SyncDatabase).query === 'function' &&
    typeof (v as SyncDatabase).runTx === 'function',
  { message: 'db must be an @x/dbx Cluster (query + runTx)' },
);

/** The schema of {@link SyncServiceOptions}; {@link resolveSyncServiceOptions} parses with it. */
export const syncServiceOptionsSchema = z
  .object({
    db: dbSchema,
    registeredTables: z.array(registeredTableSchema).min(1),
    maxSupportedSchemaVersion: z.number().int().nonnegative().default(DEFAULT_MAX_SUPPORTED_SCHEMA_VERSION),
    appName: z.string().default(DEFAULT_APP_NAME),
    limits: limitsSchema.default(() => limitsSchema.parse({})),
    dependencyOverrides: z.record(z.string(), z.array(z.string())).default({}),
    stageMetrics: z.custom<(timing: StageTiming) => void>((v) => typeof v === 'function').optional(),
    logStageTimings: z.boolean().default(false),
    bundleChangeWatch: z
      .object({
        enabled: z.boolean().default(false),
        notifyChannel: z
          .string()
          .min(1)
          .refine((s) => Buffer.byteLength(s) <= 63 && !s.includes('\0'), 'at most 63 bytes, no NUL')
          .default(DEFAULT_NOTIFY_CHANNEL),
        heartbeatIntervalMs: positiveInt(DEFAULT_WATCH_HEARTBEAT_INTERVAL_MS),
      })
      .strict()
      .default(() => ({
        enabled: false,
        notifyChannel: DEFAULT_NOTIFY_CHANNEL,
        heartbeatIntervalMs: DEFAULT_WATCH_HEARTBEAT_INTERVAL_MS,
      })),
    closeTimeoutMs: positiveInt(DEFAULT_CLOSE_TIMEOUT_MS),
    logger: z.custom<SyncLogger>(isLogger, { message: INVALID_LOGGER_MESSAGE }).optional(),
  })
  .strict();

/** What `createSyncService` accepts: `db` and `registeredTables`, every other field optional. */
export type SyncServiceOptions = z.input<typeof syncServiceOptionsSchema>;
/** The options after {@link resolveSyncServiceOptions}: every default filled in, frozen. */
export type ResolvedSyncServiceOptions = Readonly<z.output<typeof syncServiceOptionsSchema>>;
/** The resolved `limits` of a sync service. */
export type SyncLimits = z.output<typeof limitsSchema>;

/**
 * Validates the options once and deep-freezes what the parse built (the caller's db, logger and
 * callbacks stay the caller's). Unknown keys, at any depth, are refused with OVERSYNC_INVALID_OPTIONS
 * naming their path. `createSyncService` calls it; the service shows the result as `options`.
 *
 * @example
 * ```ts
 * import { createCluster } from '@x/dbx';
 * import { resolveSyncServiceOptions } from '@x/oversync/server';
 *
 * const db = createCluster({ primary: 'postgres://localhost/app' }); // connects on first use
 * const options = resolveSyncServiceOptions({ db, registeredTables: [{ schema: 'business', table: 'users' }] });
 * console.log(options.registeredTables[0]?.syncKeyColumns, options.limits.maxRowsPerPull); // [ 'id' ] 10000
 * console.log(options.bundleChangeWatch.enabled, Object.isFrozen(options.limits)); // false true
 * await db.close();
 * ```
 */
export function resolveSyncServiceOptions(options: SyncServiceOptions): ResolvedSyncServiceOptions {
  const invalid = (message: string, details: Record<string, unknown>) =>
    new SyncServerError('OVERSYNC_INVALID_OPTIONS', message, { details });
  return parseOversyncOptions(syncServiceOptionsSchema, options, 'sync service', invalid);
}
