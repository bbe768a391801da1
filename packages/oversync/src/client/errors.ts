import { isOversyncError, OversyncError, type OversyncErrorInit } from '../shared/errors.js';

/**
 * Error codes of @x/oversync/client. Codes are API: never renamed, never reused.
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

export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

export type ClientErrorOptions = OversyncErrorInit;

/**
 * The client's errors: the package's one error class ({@link OversyncError}) narrowed to the
 * client's codes. Check errors by `code`, not by `instanceof`.
 */
export class ClientError extends OversyncError<ClientErrorCode> {
  declare readonly details: Record<string, unknown>;

  constructor(code: ClientErrorCode, message: string, opts: ClientErrorOptions = {}) {
    super(code, message, { ...opts, details: opts.details ?? {} });
  }
}

export function isClientError(e: unknown, code?: ClientErrorCode): e is ClientError {
  return (
    typeof e === 'object' &&
    e !== null &&
    isOversyncError(e) &&
    (CLIENT_ERROR_CODES as readonly string[]).includes(e.code) &&
    (code === undefined || (e as { code?: unknown }).code === code)
  );
}

/** Lifecycle precondition errors (open/attach required, destructive transition pending). */
export function isLifecyclePreconditionError(e: unknown): boolean {
  return (
    isClientError(e, 'OVERSYNC_CLIENT_OPEN_REQUIRED') ||
    isClientError(e, 'OVERSYNC_CLIENT_ATTACH_REQUIRED') ||
    isClientError(e, 'OVERSYNC_CLIENT_DESTRUCTIVE_TRANSITION_IN_PROGRESS')
  );
}
