/**
 * go-oversync protocol v1 requests: their shapes, and the zod schemas that decode a body the way
 * Go's encoding/json does (case-insensitive field names, null or missing fields as zero values).
 * Field names, optionality and omission rules follow the reference's Go structs: a field marked
 * optional here is `omitempty` there (absent when empty / zero).
 */
import { z } from 'zod';
import type { SyncKey } from './wire-protocol.js';

/** Body of `POST /sync/connect`: whether the device holds local rows it has never uploaded. */
export interface ConnectRequest {
  has_local_pending_rows: boolean;
}
/** Body of `POST /sync/push-sessions`: the source bundle about to be uploaded and its row count. */
export interface PushSessionCreateRequest {
  source_bundle_id: number;
  planned_row_count: number;
  initialization_id?: string;
}
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
/** Body of a push chunk upload: consecutive rows starting at `start_row_ordinal`. */
export interface PushSessionChunkRequest {
  start_row_ordinal: number;
  rows: PushRequestRow[];
}
/**
 * `POST /sync/push` (feature `single_request_push`, an extension of protocol v1): a bundle of one
 * chunk created, uploaded and committed in one request. Same rules and errors as the three requests
 * of a push session; `rows` at most `max_rows_per_push_chunk`.
 */
export interface PushBundleRequest {
  source_bundle_id: number;
  rows: PushRequestRow[];
  initialization_id?: string;
}
/** Why a device replaces its sync source id (the wire error that told it to). */
export type SourceReplacementReason =
  | 'history_pruned'
  | 'source_sequence_out_of_order'
  | 'source_sequence_changed'
  | 'source_retired';
/** The source id a device retires and the one it continues with, sent with a snapshot session. */
export interface SnapshotSourceReplacement {
  previous_source_id: string;
  new_source_id: string;
  reason: string;
}
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

/** Decodes a {@link ConnectRequest} as Go's encoding/json would. */
export const connectRequestSchema = goStruct({ has_local_pending_rows: goBool });
/** Decodes a {@link PushSessionCreateRequest} as Go's encoding/json would. */
export const pushSessionCreateRequestSchema = goStruct({
  source_bundle_id: goInt,
  planned_row_count: goInt,
  // omitempty: absent is the usual case (undefined here, '' for null; both mean none).
  initialization_id: goString.optional(),
});
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
/** Decodes a {@link PushSessionChunkRequest} as Go's encoding/json would. */
export const pushSessionChunkRequestSchema = goStruct({
  start_row_ordinal: goInt,
  rows: z.preprocess((v) => (v === undefined ? null : v), z.array(pushRequestRowSchema).nullable()),
});
/** Decodes a {@link PushBundleRequest} as Go's encoding/json would decode such a struct. */
export const pushBundleRequestSchema = goStruct({
  source_bundle_id: goInt,
  rows: z.preprocess((v) => (v === undefined ? null : v), z.array(pushRequestRowSchema).nullable()),
  initialization_id: goString.optional(),
});
/** Decodes a {@link SnapshotSourceReplacement}; unknown fields are refused, as the reference does. */
export const snapshotSourceReplacementSchema = goStruct(
  { previous_source_id: goString, new_source_id: goString, reason: goString },
  true,
);
/** Decodes a {@link SnapshotSessionCreateRequest}; unknown fields are refused, as the reference does. */
export const snapshotSessionCreateRequestSchema = goStruct(
  { source_replacement: snapshotSourceReplacementSchema.nullable().optional() },
  true,
);
