import { INVALID_LOGGER_MESSAGE, isLogger, type Logger } from '@x/core';
import { z } from 'zod';
import { parseOversyncOptions } from '../shared/option-issues.js';
import { ClientError } from './errors.js';
import { isCoordinator, isSqliteDb } from './internal/writer.js';
import type { FetchLike, RetryPolicy, TokenSource } from './transport-types.js';
import type { ConflictResolver, ProgressEvent } from './types.js';
import type { SyncWriter } from './writer-types.js';

/** Default `uploadLimit`: rows per push chunk (at most 5000, the server's `max_rows_per_push_chunk`). */
export const DEFAULT_UPLOAD_LIMIT = 1000;
/**
 * Default `downloadLimit`: the `max_bundles` of each pull request and the `max_rows` of each committed-bundle
 * page fetched after a push (at most 5000).
 */
export const DEFAULT_DOWNLOAD_LIMIT = 1000;
/**
 * Default `snapshotChunkRows`: the `max_rows` of each snapshot chunk request (at most 5000). 2500:
 * one apply batch per page in a large hydrate (interleaved 300k-row runs: 1000-row pages took
 * longer, 5000-row pages as long with longer event-loop blocks and more memory).
 */
export const DEFAULT_SNAPSHOT_CHUNK_ROWS = 2500;
/**
 * Default `maxConflictRetries`: automatic push retries per conflicting row within one `pushPending()` call; a
 * row that conflicts again after them ends the call with `OVERSYNC_CLIENT_CONFLICT_RETRY_EXHAUSTED` (its
 * change stays queued).
 */
export const DEFAULT_MAX_CONFLICT_RETRIES = 2;
/**
 * Default `maxUnstructuredConflicts`: how many `push_conflict` answers without conflict details the same
 * bundle may get before the client rebases its local changes onto a fresh snapshot (nothing local is lost).
 */
export const DEFAULT_MAX_UNSTRUCTURED_CONFLICTS = 3;
/** Default `backoffMinMs`: the background loops' first wait after an error, in milliseconds (1 s). */
export const DEFAULT_BACKOFF_MIN_MS = 1000;
/**
 * Default `backoffMaxMs`: the longest wait of the background loops after repeated errors, in
 * milliseconds (60 s); the wait doubles up to it.
 */
export const DEFAULT_BACKOFF_MAX_MS = 60_000;
/**
 * Default `uploadIntervalMs`: how often the background uploader checks for local changes, in
 * milliseconds (1 s), when `notifyLocalChange()` does not wake it first.
 */
export const DEFAULT_UPLOAD_INTERVAL_MS = 1000;
/**
 * Default `watch.mode`: `off`, the background downloader polls; `auto` follows the server's `GET /sync/watch`
 * stream when its capabilities offer `bundle_change_watch`.
 */
export const DEFAULT_WATCH_MODE = 'off';
/**
 * Default `watch.fallbackIntervalMs`: how often the background downloader pulls when no watch stream is open,
 * in milliseconds (60 s).
 */
export const DEFAULT_WATCH_FALLBACK_INTERVAL_MS = 60_000;
/**
 * Default `throttleMs` of a live query (`client.watch()`, `watchQuery()`), in milliseconds (30):
 * after a change, the query re-runs once this long later, for every change made meanwhile.
 */
export const DEFAULT_LIVE_QUERY_THROTTLE_MS = 30;
/**
 * Default `durability`: `normal`, the durability asked of a write coordinator for the client's transactions
 * (`full`: each commit durable once it resolves, under `synchronous = FULL`).
 */
export const DEFAULT_DURABILITY = 'normal';
/** Default `resolver`: `server-wins`, every push conflict takes the server's row. */
export const DEFAULT_RESOLVER = 'server-wins';
/** Default `syncKeyColumns` of a table: `['id']`, the column(s) that identify a row on the server. */
export const DEFAULT_SYNC_KEY_COLUMNS: readonly string[] = Object.freeze(['id']);
/**
 * Default `retry` policy of the client's HTTP requests: on, 3 attempts, backoff from 100 ms doubling up to 1
 * s, with ±20 % jitter.
 */
export const DEFAULT_RETRY = Object.freeze({
  enabled: true,
  maxAttempts: 3,
  initialBackoffMs: 100,
  maxBackoffMs: 1000,
  jitter: 0.2,
});

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', 'expected a function');

/**
 * Every object of the options is strict: an unknown key (a typo such as `resolve` for `resolver`)
 * is refused with OVERSYNC_CLIENT_INVALID_OPTIONS naming its path, never dropped silently.
 */
export const syncClientOptionsSchema = z.strictObject({
  writer: z.custom<SyncWriter>(
    (v) => isCoordinator(v) || isSqliteDb(v),
    'expected a better-sqlite3 Database or a write coordinator',
  ),
  baseUrl: z.string().url(),
  fetch: fn.optional(),
  token: z.union([z.string(), fn]).optional(),
  /** The server schema name carried in every row (e.g. `business`). */
  schema: z.string().trim().min(1),
  tables: z
    .array(
      z.strictObject({
        table: z.string().trim().min(1),
        syncKeyColumns: z
          .array(z.string().trim().min(1))
          .min(1)
          .default([...DEFAULT_SYNC_KEY_COLUMNS]),
      }),
    )
    .min(1),
  /** 'server-wins' (default), 'client-wins', or a function. */
  resolver: z
    .union([z.enum(['server-wins', 'client-wins']), fn], {
      error: `expected one of "server-wins"|"client-wins" or a conflict resolver function`,
    })
    .default(DEFAULT_RESOLVER),
  logger: z.custom<Logger>(isLogger, { message: INVALID_LOGGER_MESSAGE }).optional(),
  uploadLimit: z.number().int().positive().max(5000).default(DEFAULT_UPLOAD_LIMIT),
  downloadLimit: z.number().int().positive().max(5000).default(DEFAULT_DOWNLOAD_LIMIT),
  snapshotChunkRows: z.number().int().positive().max(5000).default(DEFAULT_SNAPSHOT_CHUNK_ROWS),
  maxConflictRetries: z.number().int().min(0).default(DEFAULT_MAX_CONFLICT_RETRIES),
  maxUnstructuredConflicts: z.number().int().min(1).default(DEFAULT_MAX_UNSTRUCTURED_CONFLICTS),
  retry: z
    .strictObject({
      enabled: z.boolean().default(DEFAULT_RETRY.enabled),
      maxAttempts: z.number().int().positive().default(DEFAULT_RETRY.maxAttempts),
      initialBackoffMs: z.number().nonnegative().default(DEFAULT_RETRY.initialBackoffMs),
      maxBackoffMs: z.number().nonnegative().default(DEFAULT_RETRY.maxBackoffMs),
      jitter: z.number().min(0).max(1).default(DEFAULT_RETRY.jitter),
    })
    .default(DEFAULT_RETRY),
  backoffMinMs: z.number().positive().default(DEFAULT_BACKOFF_MIN_MS),
  backoffMaxMs: z.number().positive().default(DEFAULT_BACKOFF_MAX_MS),
  /** How often the background uploader checks for local changes when no change feed is available. */
  uploadIntervalMs: z.number().positive().default(DEFAULT_UPLOAD_INTERVAL_MS),
  watch: z
    .strictObject({
      mode: z.enum(['off', 'auto']).default(DEFAULT_WATCH_MODE),
      fallbackIntervalMs: z.number().positive().default(DEFAULT_WATCH_FALLBACK_INTERVAL_MS),
    })
    .default({ mode: DEFAULT_WATCH_MODE, fallbackIntervalMs: DEFAULT_WATCH_FALLBACK_INTERVAL_MS }),
  /** Durability asked of a coordinator for the client's transactions. */
  durability: z.enum(['normal', 'full']).default(DEFAULT_DURABILITY),
  onProgress: fn.optional(),
});

/** What `createSyncClient` accepts; every optional field has an exported default. */
export interface SyncClientOptionsInput {
  /** A better-sqlite3 Database or an `@x/writecoordinator` coordinator: every local transaction runs through it. */
  writer: SyncWriter;
  baseUrl: string;
  /** The HTTP edge (default: global fetch). */
  fetch?: FetchLike | undefined;
  /** Bearer token, or a function returning one per request. */
  token?: TokenSource | undefined;
  /** The server schema name carried in every row (e.g. `business`). */
  schema: string;
  tables: ReadonlyArray<{ readonly table: string; readonly syncKeyColumns?: readonly string[] | undefined }>;
  resolver?: 'server-wins' | 'client-wins' | ConflictResolver | undefined;
  logger?: Logger | undefined;
  uploadLimit?: number | undefined;
  downloadLimit?: number | undefined;
  snapshotChunkRows?: number | undefined;
  maxConflictRetries?: number | undefined;
  maxUnstructuredConflicts?: number | undefined;
  retry?: Partial<RetryPolicy> | undefined;
  backoffMinMs?: number | undefined;
  backoffMaxMs?: number | undefined;
  uploadIntervalMs?: number | undefined;
  watch?:
    | { readonly mode?: 'off' | 'auto' | undefined; readonly fallbackIntervalMs?: number | undefined }
    | undefined;
  durability?: 'normal' | 'full' | undefined;
  /** Called with every `progress` event, before the `client.on('progress', …)` listeners. */
  onProgress?: ((e: ProgressEvent) => void) | undefined;
}

/** The validated, frozen options (readable back as `client.options`). */
export interface SyncClientOptions {
  readonly writer: SyncWriter;
  readonly baseUrl: string;
  readonly fetch?: FetchLike | undefined;
  readonly token?: TokenSource | undefined;
  readonly schema: string;
  readonly tables: ReadonlyArray<{ readonly table: string; readonly syncKeyColumns: readonly string[] }>;
  readonly resolver: 'server-wins' | 'client-wins' | ConflictResolver;
  readonly logger?: Logger | undefined;
  readonly uploadLimit: number;
  readonly downloadLimit: number;
  readonly snapshotChunkRows: number;
  readonly maxConflictRetries: number;
  readonly maxUnstructuredConflicts: number;
  readonly retry: Readonly<RetryPolicy>;
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  readonly uploadIntervalMs: number;
  readonly watch: { readonly mode: 'off' | 'auto'; readonly fallbackIntervalMs: number };
  readonly durability: 'normal' | 'full';
  /** Called with every `progress` event, before the `client.on('progress', …)` listeners. */
  readonly onProgress?: ((e: ProgressEvent) => void) | undefined;
}

/**
 * Validates the options once and deep-freezes the result (OVERSYNC_CLIENT_INVALID_OPTIONS
 * otherwise): what `createSyncClient` does with its options, every default filled in.
 *
 * @example
 * ```ts
 * import { parseOptions } from '@x/oversync/client';
 * import Database from 'better-sqlite3';
 *
 * const options = parseOptions({
 *   writer: new Database(':memory:'),
 *   baseUrl: 'https://sync.example.com',
 *   schema: 'business',
 *   tables: [{ table: 'users' }],
 * });
 * console.log(options.resolver, options.tables[0]?.syncKeyColumns, options.retry.maxAttempts); // server-wins [ 'id' ] 3
 * console.log(Object.isFrozen(options.tables)); // true
 * ```
 */
export function parseOptions(input: unknown): SyncClientOptions {
  const invalid = (message: string, details: Record<string, unknown>) =>
    new ClientError('OVERSYNC_CLIENT_INVALID_OPTIONS', message, { details });
  return parseOversyncOptions(syncClientOptionsSchema, input, 'sync client', invalid) as SyncClientOptions;
}
