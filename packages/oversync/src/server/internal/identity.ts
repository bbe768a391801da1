/**
 * Limits on the identities a request carries: the user id (from the host's authentication, e.g. a
 * JWT `sub`) and the source id (`Oversync-Source-ID`, or a replacement's `new_source_id`). Both are
 * stored in PostgreSQL text columns and unique btree indexes, so a value PostgreSQL cannot store
 * (U+0000), cannot index (more than about 2.7 KB) or that is not text at all (control characters,
 * lone surrogates) is refused before any query, instead of failing one with a 500. The actor check
 * that applies them is here too, used by both the service API and the HTTP layer.
 */
import { SOURCE_ID_HEADER, type WireErrorCode } from '../../shared/wire.js';
import type { Actor } from '../actor.js';
import { BACKEND_WRITE_SOURCE_ID } from '../backend-writes.js';
import { wireError } from '../errors.js';

/** Longest user id or source id accepted, in UTF-8 bytes. */
export const MAX_IDENTITY_BYTES = 512;

// C0 and C1 controls (U+0000 included), DEL, and UTF-16 surrogates that are not part of a pair.
const FORBIDDEN_RE =
  /[\u0000-\u001f\u007f-\u009f]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why `id` (already trimmed) is not acceptable as an identity, or undefined when it is. */
export function identityProblem(id: string): string | undefined {
  if (id.length > MAX_IDENTITY_BYTES || Buffer.byteLength(id, 'utf8') > MAX_IDENTITY_BYTES)
    return `is longer than ${MAX_IDENTITY_BYTES} bytes`;
  if (FORBIDDEN_RE.test(id)) return 'contains control characters or unpaired surrogates';
  return undefined;
}

/**
 * Why `id` (already trimmed) is not acceptable as a source id, or undefined: an identity's limits,
 * and not the source id reserved for bundles made from backend writes (a device using it would
 * share their source sequence).
 */
export function sourceIdProblem(id: string): string | undefined {
  if (id === BACKEND_WRITE_SOURCE_ID) return `is reserved for backend writes (${BACKEND_WRITE_SOURCE_ID})`;
  return identityProblem(id);
}

/** How one entry point names an actor's two ids in its refusals. */
export interface ActorNaming {
  /** Prefix of a refused user id's message, e.g. `actor user_id`. */
  readonly userId: string;
  /** Prefix of a refused source id's message. */
  readonly sourceId: string;
  /** Message of a missing (or blank) user id: always `authentication_failed`. */
  readonly missingUserId: string;
  /** The refusal of a missing (or blank) source id. */
  readonly missingSourceId: { readonly code: WireErrorCode; readonly message: string };
}

/** The service's own API: the caller passes an `Actor`. */
export const SERVICE_ACTOR_NAMING: ActorNaming = Object.freeze({
  userId: 'actor user_id',
  sourceId: 'actor source_id',
  missingUserId: 'actor user_id and source_id are required',
  missingSourceId: Object.freeze({
    code: 'authentication_failed',
    message: 'actor user_id and source_id are required',
  }),
});

/** HTTP: the user id from the host's authentication, the source id from its header. */
export const HTTP_ACTOR_NAMING: ActorNaming = Object.freeze({
  userId: 'authenticated user_id',
  sourceId: `${SOURCE_ID_HEADER} header`,
  missingUserId: 'authenticated user_id not found in request context',
  missingSourceId: Object.freeze({
    code: 'invalid_request',
    message: `${SOURCE_ID_HEADER} header is required`,
  }),
});

/**
 * The one check of an actor, for every entry point: both ids trimmed, present and acceptable
 * identities. A bad user id is `authentication_failed`, a bad source id `invalid_request`.
 */
export function checkActor(userId: unknown, sourceId: unknown, naming: ActorNaming): Actor {
  const uid = typeof userId === 'string' ? userId.trim() : '';
  if (!uid) throw wireError('authentication_failed', naming.missingUserId);
  const userProblem = identityProblem(uid);
  if (userProblem) throw wireError('authentication_failed', `${naming.userId} ${userProblem}`);
  const sid = typeof sourceId === 'string' ? sourceId.trim() : '';
  if (!sid) throw wireError(naming.missingSourceId.code, naming.missingSourceId.message);
  const sourceProblem = sourceIdProblem(sid);
  if (sourceProblem) throw wireError('invalid_request', `${naming.sourceId} ${sourceProblem}`);
  return { userId: uid, sourceId: sid };
}
