/** The push endpoints (§4): `/sync/push-sessions`, its chunks, commit and delete; `/sync/push` (one request). */
import type { FastifyRequest } from 'fastify';
import { fieldCount, isJsonObject, rowFields } from '../../../shared/plain-rows.js';
import {
  type PushBundleRequest,
  type PushRequestRow,
  type PushSessionChunkRequest,
  type PushSessionCreateRequest,
  pushBundleRequestSchema,
  pushSessionChunkRequestSchema,
  pushSessionCreateRequestSchema,
} from '../../../shared/wire.js';
import { parseParams, pushIdParamsSchema } from './params.js';
import { parseBody } from './request.js';
import type { RouteContext, RouteDef } from './route.js';

const CHUNK_FIELDS: ReadonlySet<string> = new Set(['start_row_ordinal', 'rows']);
const PUSH_FIELDS: ReadonlySet<string> = new Set(['source_bundle_id', 'rows', 'initialization_id']);
const CHUNK_ROW_FIELDS = rowFields('op', 'base_row_version');

/** Rows in their plain form (see plainChunkBody), or undefined. */
function plainRows(rows: unknown): PushRequestRow[] | undefined {
  if (!Array.isArray(rows)) return undefined;
  for (const r of rows as unknown[]) {
    if (!isJsonObject(r) || fieldCount(r, CHUNK_ROW_FIELDS) < 0) return undefined;
    if (
      typeof r['schema'] !== 'string' ||
      typeof r['table'] !== 'string' ||
      typeof r['op'] !== 'string' ||
      !isJsonObject(r['key']) ||
      !Number.isSafeInteger(r['base_row_version'])
    )
      return undefined;
  }
  return rows as PushRequestRow[];
}

/** The body parsed as JSON when it is an object with only `fields`, else undefined. */
function plainObject(raw: unknown, fields: ReadonlySet<string>): Record<string, unknown> | undefined {
  if (typeof raw !== 'string') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  return isJsonObject(v) && fieldCount(v, fields) >= 0 ? v : undefined;
}

/**
 * A chunk body in its plain form — exact field names, every required field present with its JSON
 * type — checked without zod (whose per-row preprocessing is a fifth of a chunk's CPU time).
 * Whatever this accepts, `pushSessionChunkRequestSchema` accepts with the same values: zod only
 * renames case-insensitive field names and fills Go zero values for missing or null fields, and
 * neither applies here. Anything else (`undefined`) takes the zod path and its errors.
 */
function plainChunkBody(raw: unknown): PushSessionChunkRequest | undefined {
  const v = plainObject(raw, CHUNK_FIELDS);
  const start = v?.['start_row_ordinal'];
  const rows = plainRows(v?.['rows']);
  if (!Number.isSafeInteger(start) || !rows) return undefined;
  return { start_row_ordinal: start as number, rows };
}

/** A one-request push body in its plain form, as plainChunkBody (initialization_id a non-empty string). */
function plainPushBody(raw: unknown): PushBundleRequest | undefined {
  const v = plainObject(raw, PUSH_FIELDS);
  const id = v?.['source_bundle_id'];
  const init = v?.['initialization_id'];
  const rows = plainRows(v?.['rows']);
  if (!Number.isSafeInteger(id) || !rows || (init !== undefined && (typeof init !== 'string' || !init)))
    return undefined;
  const body: PushBundleRequest = { source_bundle_id: id as number, rows };
  if (init) body.initialization_id = init as string;
  return body;
}

/** The rows of a zod-decoded body, each as a push row (`payload` kept only when sent). */
function decodedRows(
  rows: ReadonlyArray<Omit<PushRequestRow, 'key'> & { key: PushRequestRow['key'] | null }> | null,
) {
  return (rows ?? []).map((r) => {
    const row: PushRequestRow = {
      schema: r.schema,
      table: r.table,
      key: r.key ?? {},
      op: r.op,
      base_row_version: r.base_row_version,
    };
    if (Object.hasOwn(r, 'payload')) row.payload = r.payload;
    return row;
  });
}

/** The push session of a `/sync/push-sessions/:push_id…` request. */
function pushId(req: FastifyRequest): string {
  return parseParams(req.params, pushIdParamsSchema, 'invalid_request').push_id;
}

/** A chunk body: the plain form without zod, anything else through the schema (Go's decoding). */
function chunkBody(req: FastifyRequest): PushSessionChunkRequest {
  const plain = plainChunkBody(req.body);
  if (plain) return plain;
  const body = parseBody(
    req,
    pushSessionChunkRequestSchema,
    'invalid_request',
    'Failed to parse push chunk request',
  );
  return { start_row_ordinal: body.start_row_ordinal, rows: decodedRows(body.rows) };
}

/** A one-request push body, as chunkBody. */
function pushBody(req: FastifyRequest): PushBundleRequest {
  const plain = plainPushBody(req.body);
  if (plain) return plain;
  const body = parseBody(req, pushBundleRequestSchema, 'invalid_request', 'Failed to parse push request');
  const out: PushBundleRequest = { source_bundle_id: body.source_bundle_id, rows: decodedRows(body.rows) };
  if (body.initialization_id) out.initialization_id = body.initialization_id;
  return out;
}

export function pushRoutes({ service }: RouteContext): RouteDef[] {
  return [
    {
      method: 'POST',
      url: '/sync/push-sessions',
      failCode: 'push_session_create_failed',
      failMessage: 'Failed to create push session',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const body = parseBody(
          req,
          pushSessionCreateRequestSchema,
          'invalid_request',
          'Failed to parse push session request',
        );
        const create: PushSessionCreateRequest = {
          source_bundle_id: body.source_bundle_id,
          planned_row_count: body.planned_row_count,
        };
        if (body.initialization_id) create.initialization_id = body.initialization_id;
        return service.createPushSession(actor, create, { signal });
      },
    },
    {
      method: 'POST',
      url: '/sync/push-sessions/:push_id/chunks',
      failCode: 'push_chunk_failed',
      failMessage: 'Failed to upload push chunk',
      actor: true,
      handler: (req, _reply, actor, signal) =>
        service.uploadPushChunk(actor, pushId(req), chunkBody(req), { signal }),
    },
    {
      method: 'POST',
      url: '/sync/push-sessions/:push_id/commit',
      failCode: 'push_session_commit_failed',
      failMessage: 'Failed to commit push session',
      actor: true,
      handler: (req, _reply, actor, signal) => service.commitPushSession(actor, pushId(req), { signal }),
    },
    {
      method: 'POST',
      url: '/sync/push',
      failCode: 'push_failed',
      failMessage: 'Failed to push bundle',
      actor: true,
      handler: (req, _reply, actor, signal) => service.pushBundle(actor, pushBody(req), { signal }),
    },
    {
      method: 'DELETE',
      url: '/sync/push-sessions/:push_id',
      failCode: 'push_session_delete_failed',
      failMessage: 'Failed to delete push session',
      actor: true,
      handler: async (req, _reply, actor, signal) => {
        await service.deletePushSession(actor, pushId(req), { signal });
        return undefined;
      },
    },
  ];
}
