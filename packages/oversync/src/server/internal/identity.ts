/**
 * Limits on the identities a request carries: the user id (from the host's authentication, e.g. a
 * JWT `sub`) and the source id (`Oversync-Source-ID`, or a replacement's `new_source_id`). Both are
 * stored in PostgreSQL text columns and unique btree indexes, so a value PostgreSQL cannot store
 * (U+0000), cannot index (more than about 2.7 KB) or that is not text at all (control characters,
 * lone surrogates) is refused before any query, instead of failing one with a 500.
 */

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
