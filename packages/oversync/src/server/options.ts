import { z } from 'zod';
import type { SyncDatabase } from './database.js';
import { SyncServerError } from './errors.js';

export const DEFAULT_MAX_SUPPORTED_SCHEMA_VERSION = 1;
export const DEFAULT_APP_NAME = '';
export const DEFAULT_ROWS_PER_PUSH_CHUNK = 1000;
export const DEFAULT_MAX_ROWS_PER_PUSH_CHUNK = 5000;
export const DEFAULT_PUSH_SESSION_TTL_MS = 15 * 60_000;
export const DEFAULT_INITIALIZATION_LEASE_TTL_MS = 15 * 60_000;
export const DEFAULT_ROWS_PER_COMMITTED_BUNDLE_CHUNK = 1000;
export const DEFAULT_MAX_ROWS_PER_COMMITTED_BUNDLE_CHUNK = 5000;
export const DEFAULT_ROWS_PER_SNAPSHOT_CHUNK = 1000;
export const DEFAULT_MAX_ROWS_PER_SNAPSHOT_CHUNK = 5000;
export const DEFAULT_SNAPSHOT_SESSION_TTL_MS = 15 * 60_000;
export const DEFAULT_RETAINED_BUNDLES_PER_USER = 10_000;
export const DEFAULT_RETENTION_PRUNE_BATCH_SIZE = 1000;
/** Fixed by the protocol: `GET /sync/pull` default and maximum `max_bundles`. */
export const DEFAULT_BUNDLES_PER_PULL = 1000;
export const MAX_BUNDLES_PER_PULL = 5000;
/**
 * A pull page stops adding bundles once it holds this many rows (at least one bundle is always
 * returned, `has_more` says the rest follows), so `max_bundles=5000` cannot make one request load
 * millions of rows.
 */
export const DEFAULT_MAX_ROWS_PER_PULL = 10_000;
export const DEFAULT_NOTIFY_CHANNEL = 'oversync_bundle_change_v1';
export const DEFAULT_WATCH_HEARTBEAT_INTERVAL_MS = 25_000;
export const DEFAULT_BODY_LIMIT_BYTES = 32 * 1024 * 1024;
export const DEFAULT_CLOSE_TIMEOUT_MS = 30_000;
export const DEFAULT_REQUEST_STATEMENT_TIMEOUT_MS = 5_000;

/** Per-stage timing of a hot path (only pull emits, as in the reference). */
export interface StageTiming {
  operation: string;
  stage: string;
  durationMs: number;
  count: number;
  attempt: number;
  error: boolean;
}

/** pino-compatible logger subset. */
export interface SyncLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

const positiveInt = (d: number) => z.number().int().positive().default(d);
const nonNegInt = (d: number) => z.number().int().nonnegative().default(d);

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
    syncKeyColumns: z.array(z.string()).default([]),
  })
  .strict();

const dbSchema = z.custom<SyncDatabase>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as SyncDatabase).query === 'function' &&
    typeof (v as SyncDatabase).runTx === 'function',
  { message: 'db must be an @x/dbx Cluster (query + runTx)' },
);

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
    logger: z
      .custom<SyncLogger>(
        (v) => typeof v === 'object' && v !== null && typeof (v as SyncLogger).warn === 'function',
      )
      .optional(),
  })
  .strict();

export type SyncServiceOptions = z.input<typeof syncServiceOptionsSchema>;
export type ResolvedSyncServiceOptions = Readonly<z.output<typeof syncServiceOptionsSchema>>;
export type SyncLimits = z.output<typeof limitsSchema>;

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) {
      if (k === 'db' || k === 'logger' || k === 'stageMetrics') continue;
      deepFreeze((v as Record<string, unknown>)[k]);
    }
  }
  return v;
}

export function resolveSyncServiceOptions(options: SyncServiceOptions): ResolvedSyncServiceOptions {
  const parsed = syncServiceOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new SyncServerError(
      'OVERSYNC_INVALID_OPTIONS',
      `invalid sync service options: ${parsed.error.message}`,
      {
        details: { issues: parsed.error.issues },
      },
    );
  }
  return deepFreeze(parsed.data);
}

export const SILENT_LOGGER: SyncLogger = Object.freeze({
  debug() {},
  info() {},
  warn() {},
  error() {},
});
