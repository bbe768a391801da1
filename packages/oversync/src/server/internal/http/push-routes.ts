/** The push endpoints (§4): `/sync/push-sessions`, its chunks, commit and delete. */
import type { FastifyRequest } from 'fastify';
import {
  type PushRequestRow,
  type PushSessionChunkRequest,
  type PushSessionCreateRequest,
  pushSessionChunkRequestSchema,
  pushSessionCreateRequestSchema,
} from '../../../shared/wire.js';
import { parseParams, pushIdParamsSchema } from './params.js';
import { parseBody } from './request.js';
import type { RouteContext, RouteDef } from './route.js';

const CHUNK_FIELDS: ReadonlySet<string> = new Set(['start_row_ordinal', 'rows']);
const CHUNK_ROW_FIELDS: ReadonlySet<string> = new Set([
  'schema',
  'table',
  'key',
  'op',
  'base_row_version',
  'payload',
]);

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function hasOnlyFields(v: Record<string, unknown>, fields: ReadonlySet<string>): boolean {
  for (const k in v) if (!fields.has(k)) return false;
  return true;
}

/**
 * A chunk body in its plain form — exact field names, every required field present with its JSON
 * type — checked without zod (whose per-row preprocessing is a fifth of a chunk's CPU time).
 * Whatever this accepts, `pushSessionChunkRequestSchema` accepts with the same values: zod only
 * renames case-insensitive field names and fills Go zero values for missing or null fields, and
 * neither applies here. Anything else (`undefined`) takes the zod path and its errors.
 */
function plainChunkBody(raw: unknown): PushSessionChunkRequest | undefined {
  if (typeof raw !== 'string') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (!isPlainObject(v) || !hasOnlyFields(v, CHUNK_FIELDS)) return undefined;
  const start = v['start_row_ordinal'];
  const rows = v['rows'];
  if (!Number.isSafeInteger(start) || !Array.isArray(rows)) return undefined;
  for (const r of rows as unknown[]) {
    if (!isPlainObject(r) || !hasOnlyFields(r, CHUNK_ROW_FIELDS)) return undefined;
    if (
      typeof r['schema'] !== 'string' ||
      typeof r['table'] !== 'string' ||
      typeof r['op'] !== 'string' ||
      !isPlainObject(r['key']) ||
      !Number.isSafeInteger(r['base_row_version'])
    )
      return undefined;
  }
  return { start_row_ordinal: start as number, rows: rows as PushRequestRow[] };
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
  return {
    start_row_ordinal: body.start_row_ordinal,
    rows: (body.rows ?? []).map((r) => {
      const row: PushRequestRow = {
        schema: r.schema,
        table: r.table,
        key: r.key ?? {},
        op: r.op,
        base_row_version: r.base_row_version,
      };
      if (Object.hasOwn(r, 'payload')) row.payload = r.payload;
      return row;
    }),
  };
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
