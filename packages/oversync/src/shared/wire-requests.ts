/**
 * go-oversync protocol v1 requests: their shapes, and the zod schemas that decode a body the way
 * Go's encoding/json does (case-insensitive field names, null or missing fields as zero values).
 * Field names, optionality and omission rules follow the reference's Go structs: a field marked
 * optional here is `omitempty` there (absent when empty / zero).
 */
import { z } from 'zod';
import type { SyncKey } from './wire-protocol.js';

/**
 * Body of `POST /sync/connect`, sent before a device's first push or pull on a scope (attach): whether the
 * device has local rows to seed an uninitialized scope with. Answered by a {@link ConnectResponse}.
 */
/** Body of `POST /sync/connect`: whether the device holds local rows it has never uploaded. */
export interface ConnectRequest {
  has_local_pending_rows: boolean;
}
/**
 * Body of `POST /sync/push-sessions`, which opens a staged upload of one source bundle. `source_bundle_id` is
 * the source's next bundle number (exactly the last committed one + 1), `planned_row_count` how many rows the
 * chunks will carry (> 0), and `initialization_id` is the lease id of a seed push (`initialize_local`),
 * absent otherwise. Answered by a {@link PushSessionCreateResponse}.
 */
/** Body of `POST /sync/push-sessions`: the source bundle about to be uploaded and its row count. */
export interface PushSessionCreateRequest {
  source_bundle_id: number;
  planned_row_count: number;
  initialization_id?: string;
}
/**
 * One row of a push chunk: an intended INSERT, UPDATE or DELETE of the row `key` of registered table
 * `schema.table`. `base_row_version` is the server row version the change was made on (0 for a row the client
 * never saw); the server answers `push_conflict` when it no longer matches. `payload` is the row's wire
 * after-image (INSERT, UPDATE), absent for DELETE.
 */
/** One row change of a push chunk, with the row version it was based on. */
export interface PushRequestRow {
  schema: string;
  table: string;
  key: SyncKey;
  op: string;
  base_row_version: number;
  /** Present (even as `null`) means present: the reference rejects `"payload": null` on DELETE. */
  payload?: unknown;
}
/**
 * Body of `POST /sync/push-sessions/{push_id}/chunks`: the next rows of a staged push, starting at 0-based
 * ordinal `start_row_ordinal` (which must equal the session's `next_expected_row_ordinal`). Answered by a
 * {@link PushSessionChunkResponse}.
 */
/** Body of a push chunk upload: consecutive rows starting at `start_row_ordinal`. */
export interface PushSessionChunkRequest {
  start_row_ordinal: number;
  rows: PushRequestRow[];
}
/**
 * Why a device replaces its source id (the `reason` of a {@link SnapshotSourceReplacement}): the server
 * refused the old source's next bundle with this error code.
 */
/** Why a device replaces its sync source id (the wire error that told it to). */
export type SourceReplacementReason =
  | 'history_pruned'
  | 'source_sequence_out_of_order'
  | 'source_sequence_changed'
  | 'source_retired';
/**
 * Part of a snapshot-session request: retire the device's current source id (`previous_source_id`, which must
 * be the `Oversync-Source-ID` of the request) and reserve `new_source_id` for it, atomically with the
 * snapshot. `reason` is a {@link SourceReplacementReason}.
 */
/** The source id a device retires and the one it continues with, sent with a snapshot session. */
export interface SnapshotSourceReplacement {
  previous_source_id: string;
  new_source_id: string;
  reason: string;
}
/**
 * Body of `POST /sync/snapshot-sessions` (optional: no body is a plain snapshot), sent to hydrate or rebuild
 * a device from the server's live rows. With `source_replacement` the same request rotates the device's
 * source id. Answered by a {@link SnapshotSession}.
 */
/** Body of `POST /sync/snapshot-sessions` (empty, or a source replacement). */
export interface SnapshotSessionCreateRequest {
  source_replacement?: SnapshotSourceReplacement;
}

/**
 * Go's `encoding/json` matches object keys to struct fields case-insensitively (an exact match
 * wins). This renames such keys to the field's spelling so a plain zod object can validate them.
 *
 * @example
 * ```ts
 * import { matchGoFieldNames } from '@x/oversync';
 *
 * matchGoFieldNames({ Has_Local_Pending_Rows: true }, ['has_local_pending_rows']);
 * // { has_local_pending_rows: true }, as Go's decoder would read it
 * ```
 */
export function matchGoFieldNames(value: unknown, fields: readonly string[]): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const src = value as Record<string, unknown>;
  let allExact = true;
  for (const k in src) {
    if (!fields.includes(k)) {
      allExact = false;
      break;
    }
  }
  if (allExact) return value;
  const out: Record<string, unknown> = {};
  const exact = new Set(fields);
  for (const k of Object.keys(src)) {
    if (exact.has(k)) continue;
    const lower = k.toLowerCase();
    const field = fields.find((f) => f.toLowerCase() === lower);
    const name = field === undefined ? k : Object.hasOwn(src, field) ? undefined : field;
    // defineProperty: a key like "__proto__" must stay an own (unknown) field, never a prototype.
    if (name !== undefined)
      Object.defineProperty(out, name, {
        value: src[k],
        enumerable: true,
        writable: true,
        configurable: true,
      });
  }
  for (const f of fields) if (Object.hasOwn(src, f)) out[f] = src[f];
  return out;
}

/** A Go int64 field: JSON integer; `null` or missing decode to 0. */
const goInt = z.preprocess((v) => (v === null || v === undefined ? 0 : v), z.number().int());
/** A Go bool field: `null` or missing decode to false. */
const goBool = z.preprocess((v) => (v === null || v === undefined ? false : v), z.boolean());
/** A Go string field: `null` or missing decode to "". */
const goString = z.preprocess((v) => (v === null || v === undefined ? '' : v), z.string());

function goStruct<T extends z.ZodRawShape>(shape: T, strict = false) {
  const fields = Object.keys(shape);
  const obj = strict ? z.strictObject(shape) : z.object(shape);
  return z.preprocess((v) => matchGoFieldNames(v, fields), obj);
}

/**
 * Decodes a {@link ConnectRequest} body the way the Go reference does (missing `has_local_pending_rows` is
 * false).
 */
/** Decodes a {@link ConnectRequest} as Go's encoding/json would. */
export const connectRequestSchema = goStruct({ has_local_pending_rows: goBool });
/**
 * Decodes a {@link PushSessionCreateRequest} body the way the Go reference does (missing integers are 0; the
 * server checks them afterwards).
 */
/** Decodes a {@link PushSessionCreateRequest} as Go's encoding/json would. */
export const pushSessionCreateRequestSchema = goStruct({
  source_bundle_id: goInt,
  planned_row_count: goInt,
  // omitempty: absent is the usual case (undefined here, '' for null; both mean none).
  initialization_id: goString.optional(),
});
/**
 * Decodes one {@link PushRequestRow} of a push chunk the way the Go reference does; `payload` stays as sent
 * (present, even as `null`, or absent).
 */
/** Decodes a {@link PushRequestRow} as Go's encoding/json would (`payload` kept as sent). */
export const pushRequestRowSchema = z.preprocess(
  (v) => matchGoFieldNames(v, ['schema', 'table', 'key', 'op', 'base_row_version', 'payload']),
  z.object({
    schema: goString,
    table: goString,
    key: z.preprocess((v) => (v === undefined ? null : v), z.record(z.string(), z.unknown()).nullable()),
    op: goString,
    base_row_version: goInt,
    payload: z.unknown().optional(),
  }),
);
/**
 * Decodes a {@link PushSessionChunkRequest} body the way the Go reference does (missing `rows` is `null`).
 */
/** Decodes a {@link PushSessionChunkRequest} as Go's encoding/json would. */
export const pushSessionChunkRequestSchema = goStruct({
  start_row_ordinal: goInt,
  rows: z.preprocess((v) => (v === undefined ? null : v), z.array(pushRequestRowSchema).nullable()),
});
/**
 * Decodes the `source_replacement` object of a snapshot-session request ({@link SnapshotSourceReplacement});
 * unknown fields are refused, as the reference's strict decoder does.
 */
/** Decodes a {@link SnapshotSourceReplacement}; unknown fields are refused, as the reference does. */
export const snapshotSourceReplacementSchema = goStruct(
  { previous_source_id: goString, new_source_id: goString, reason: goString },
  true,
);
/**
 * Decodes a {@link SnapshotSessionCreateRequest} body; unknown fields are refused
 * (`snapshot_session_invalid`), as the reference's strict decoder does.
 */
/** Decodes a {@link SnapshotSessionCreateRequest}; unknown fields are refused, as the reference does. */
export const snapshotSessionCreateRequestSchema = goStruct(
  { source_replacement: snapshotSourceReplacementSchema.nullable().optional() },
  true,
);
