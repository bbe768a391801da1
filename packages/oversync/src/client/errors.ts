import { isOversyncError, OversyncError, type OversyncErrorInit } from '../shared/errors.js';

/**
 * Error codes of `@x/oversync/client`. Codes are API: never renamed, never reused.
 * Every error the client throws is a {@link ClientError} with one of these codes.
 */
export const CLIENT_ERROR_CODES = [
  'OVERSYNC_CLIENT_INVALID_OPTIONS',
  'OVERSYNC_CLIENT_CLOSED',
  'OVERSYNC_CLIENT_ABORTED',
  'OVERSYNC_CLIENT_DATABASE_ALREADY_OWNED',
  'OVERSYNC_CLIENT_UNSUPPORTED_SCHEMA',
  'OVERSYNC_CLIENT_SCHEMA_SCOPE_CONFLICT',
  'OVERSYNC_CLIENT_OPEN_REQUIRED',
  'OVERSYNC_CLIENT_ATTACH_REQUIRED',
  'OVERSYNC_CLIENT_ATTACH_BINDING_CONFLICT',
  'OVERSYNC_CLIENT_ATTACH_LOCAL_STATE_CONFLICT',
  'OVERSYNC_CLIENT_LIFECYCLE_UNSUPPORTED',
  'OVERSYNC_CLIENT_DESTRUCTIVE_TRANSITION_IN_PROGRESS',
  'OVERSYNC_CLIENT_SOURCE_RECOVERY_REQUIRED',
  'OVERSYNC_CLIENT_SOURCE_REPLACEMENT_DIVERGED',
  'OVERSYNC_CLIENT_PENDING_PUSH_REPLAY',
  'OVERSYNC_CLIENT_RECONNECT_REQUIRED',
  'OVERSYNC_CLIENT_PUSH_CONFLICT',
  'OVERSYNC_CLIENT_INVALID_CONFLICT_RESOLUTION',
  'OVERSYNC_CLIENT_CONFLICT_RETRY_EXHAUSTED',
  'OVERSYNC_CLIENT_PROTOCOL',
  'OVERSYNC_CLIENT_HASH_MISMATCH',
  'OVERSYNC_CLIENT_CODEC',
  'OVERSYNC_CLIENT_HTTP',
  'OVERSYNC_CLIENT_NETWORK',
  'OVERSYNC_CLIENT_RETRY_EXHAUSTED',
  'OVERSYNC_CLIENT_LOCAL_WRITE',
] as const;

/** One of {@link CLIENT_ERROR_CODES}. */
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

export type ClientErrorOptions = OversyncErrorInit;

/**
 * The client's errors: the package's one error class ({@link OversyncError}) narrowed to the
 * client's codes. Check errors by `code`, not by `instanceof`. `details` is always an object
 * (empty when there is nothing to add).
 *
 * @example
 * ```ts
 * import { createSyncClient, isClientError } from '@x/oversync/client';
 * import Database from 'better-sqlite3';
 *
 * try {
 *   createSyncClient({
 *     writer: new Database(':memory:'),
 *     baseUrl: 'https://sync.example.com',
 *     schema: 'business',
 *     tables: [{ table: 'users' }],
 *     uploadLimit: 0,
 *   });
 * } catch (e) {
 *   if (!isClientError(e)) throw e;
 *   console.log(e.code, e.retryable); // OVERSYNC_CLIENT_INVALID_OPTIONS false
 *   console.log(e.message); // invalid sync client options: uploadLimit: Too small: expected number to be >0
 *   console.log(Object.keys(e.details)); // [ 'issues' ]
 * }
 * ```
 */
export class ClientError extends OversyncError<ClientErrorCode> {
  declare readonly details: Record<string, unknown>;

  constructor(code: ClientErrorCode, message: string, opts: ClientErrorOptions = {}) {
    super(code, message, { ...opts, details: opts.details ?? {} });
  }
}

/**
 * Whether `e` is a {@link ClientError}, and when `code` is given, one with that code. Works across
 * copies of the package, unlike `instanceof`.
 *
 * @example
 * ```ts
 * import { createSyncClient, isClientError } from '@x/oversync/client';
 * import Database from 'better-sqlite3';
 *
 * const db = new Database(':memory:');
 * db.exec('CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)');
 * const client = createSyncClient({
 *   writer: db,
 *   baseUrl: 'https://sync.example.com',
 *   fetch: async () => {
 *     throw new TypeError('fetch failed'); // the device is offline
 *   },
 *   schema: 'business',
 *   tables: [{ table: 'users' }],
 *   retry: { enabled: false },
 * });
 * await client.open();
 * const outcome = await client.attach('user-123').catch((e: unknown) => e);
 * if (isClientError(outcome, 'OVERSYNC_CLIENT_NETWORK')) console.log('offline, try later', outcome.retryable); // offline, try later true
 * else if (isClientError(outcome)) console.log('attach failed', outcome.code);
 * await client.close();
 * ```
 */
export function isClientError(e: unknown, code?: ClientErrorCode): e is ClientError {
  return (
    typeof e === 'object' &&
    e !== null &&
    isOversyncError(e) &&
    (CLIENT_ERROR_CODES as readonly string[]).includes(e.code) &&
    (code === undefined || (e as { code?: unknown }).code === code)
  );
}

/**
 * Lifecycle precondition errors (open/attach required, destructive transition pending): the call
 * came too early, and the same call succeeds once the client is opened and attached.
 *
 * @example
 * ```ts
 * import { createSyncClient, isLifecyclePreconditionError } from '@x/oversync/client';
 * import Database from 'better-sqlite3';
 *
 * const db = new Database(':memory:');
 * db.exec('CREATE TABLE users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)');
 * const client = createSyncClient({
 *   writer: db,
 *   baseUrl: 'https://sync.example.com',
 *   schema: 'business',
 *   tables: [{ table: 'users' }],
 * });
 * await client.open();
 * const early = await client.sync().catch((e: unknown) => e); // before attach()
 * console.log(isLifecyclePreconditionError(early), (early as Error).message); // true sync needs attach()
 * await client.close();
 * ```
 */
export function isLifecyclePreconditionError(e: unknown): boolean {
  return (
    isClientError(e, 'OVERSYNC_CLIENT_OPEN_REQUIRED') ||
    isClientError(e, 'OVERSYNC_CLIENT_ATTACH_REQUIRED') ||
    isClientError(e, 'OVERSYNC_CLIENT_DESTRUCTIVE_TRANSITION_IN_PROGRESS')
  );
}
