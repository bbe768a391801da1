import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { goEscapeJsonText } from '../shared/canonical-json.js';
import {
  connectRequestSchema,
  type PushRequestRow,
  type PushSessionChunkRequest,
  pushSessionChunkRequestSchema,
  pushSessionCreateRequestSchema,
  type SnapshotSessionCreateRequest,
  SOURCE_ID_HEADER,
  snapshotSessionCreateRequestSchema,
  type WireErrorCode,
} from '../shared/wire.js';
import { isSyncServerError, SyncServerError, WIRE_ERROR_STATUS, wireError } from './errors.js';
import { identityProblem } from './internal/identity.js';
import { wireJson } from './internal/raw-json.js';
import type { Actor } from './internal/state.js';
import { DEFAULT_BODY_LIMIT_BYTES, MAX_BUNDLES_PER_PULL } from './options.js';
import type { BundleChangeSubscription, SyncService } from './service.js';

export const DEFAULT_FASTIFY_BODY_LIMIT = DEFAULT_BODY_LIMIT_BYTES;

export interface OversyncFastifyOptions {
  service: SyncService;
  /**
   * The trusted user id of a request, from the host's authentication (e.g. the `sub` of a JWT the
   * host's own hook verified). Blank or missing ⇒ 401 `authentication_failed`. Never read from the body.
   */
  userIdFromRequest: (
    request: FastifyRequest,
  ) => string | null | undefined | Promise<string | null | undefined>;
  /** Per-actor policy for `GET /sync/watch` (default: allowed). */
  bundleChangeWatchAllowed?: (request: FastifyRequest, actor: Actor) => boolean | Promise<boolean>;
  /** Largest accepted request body in bytes (default 32 MiB); larger ⇒ 413 `invalid_request`. */
  bodyLimit?: number;
}

const optionsSchema = z.object({
  service: z.custom<SyncService>((v) => typeof v === 'object' && v !== null),
  userIdFromRequest: z.custom<OversyncFastifyOptions['userIdFromRequest']>((v) => typeof v === 'function'),
  bundleChangeWatchAllowed: z
    .custom<(r: FastifyRequest, a: Actor) => boolean>((v) => typeof v === 'function')
    .optional(),
  bodyLimit: z.number().int().positive().optional(),
});

declare module 'fastify' {
  interface FastifyRequest {
    oversyncActor?: Actor;
  }
}

/** Go `strconv.ParseInt` syntax: optional sign, decimal digits, nothing else (no trimming). */
const INT_RE = /^[+-]?\d+$/;
function parseGoInt(s: string): number | undefined {
  if (!INT_RE.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}
const queryString = z.union([z.string(), z.array(z.string())]).optional();
const querySchema = z.record(z.string(), queryString);

function firstQuery(req: FastifyRequest, name: string): string | undefined {
  const q = querySchema.safeParse(req.query ?? {});
  if (!q.success) return undefined;
  const v = q.data[name];
  return Array.isArray(v) ? v[0] : v;
}

/** JSON as Go's `json.Encoder` writes it: HTML-safe escapes and a trailing newline. */
function sendJson(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).header('content-type', 'application/json').send(wireJson(body));
}

function sendError(
  reply: FastifyReply,
  code: WireErrorCode,
  message: string,
  extra?: Record<string, unknown>,
) {
  return sendJson(reply, WIRE_ERROR_STATUS[code], { error: code, message, ...extra });
}

type Handler = (
  req: FastifyRequest,
  reply: FastifyReply,
  actor: Actor,
  signal: AbortSignal,
) => Promise<unknown>;

interface RouteDef {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  /** The endpoint's code for unexpected failures (HTTP 500). */
  failCode: WireErrorCode;
  failMessage: string;
  actor: boolean;
  handler: Handler;
}

/** Parses a JSON body the way the reference's handlers do; failures are `code` 400s. */
function parseBody<T>(req: FastifyRequest, schema: z.ZodType<T>, code: WireErrorCode, message: string): T {
  const raw = req.body;
  if (typeof raw !== 'string' || raw.trim() === '') throw wireError(code, message);
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw wireError(code, message);
  }
  const r = schema.safeParse(parsed);
  if (!r.success) throw wireError(code, message, { details: { issues: r.error.issues } });
  return r.data;
}

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

function intParam(
  req: FastifyRequest,
  name: string,
  code: WireErrorCode,
  opts: { min: number; def?: number },
): number | undefined {
  const s = firstQuery(req, name);
  if (s === undefined || s === '') return opts.def;
  const n = parseGoInt(s);
  if (n === undefined) throw wireError(code, `${name} must be an integer`);
  if (n < opts.min) throw wireError(code, `${name} must be >= ${opts.min}`);
  return n;
}

function pathParam(req: FastifyRequest, name: string): string {
  const p = z.record(z.string(), z.string()).safeParse(req.params);
  return p.success ? (p.data[name] ?? '') : '';
}

/**
 * For the host's `Fastify({ frameworkErrors })` option: the errors fastify's router answers before
 * any route or plugin runs (a path parameter longer than `maxParamLength`, a malformed URL) get
 * the protocol's JSON error body (`invalid_request`) instead of fastify's own.
 */
export function oversyncFrameworkErrors(
  error: { statusCode?: number; message?: string },
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  const status =
    error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
      ? error.statusCode
      : 400;
  sendJson(reply, status, { error: 'invalid_request', message: 'malformed request URL' });
}

/**
 * Mounts the go-oversync v1 routes (`/sync/*`, `/syncx/*`) on a fastify instance. Register it
 * after the host's auth hook; `userIdFromRequest` reads the identity that hook established.
 */
export async function oversyncFastifyPlugin(fastify: FastifyInstance, rawOptions: OversyncFastifyOptions) {
  const parsed = optionsSchema.safeParse(rawOptions);
  if (!parsed.success) {
    throw new SyncServerError(
      'OVERSYNC_INVALID_OPTIONS',
      `invalid oversync fastify options: ${parsed.error.message}`,
    );
  }
  const opts = rawOptions;
  const service = opts.service;
  const bodyLimit = opts.bodyLimit ?? DEFAULT_FASTIFY_BODY_LIMIT;

  // Open watch streams never end on their own, so `app.close()` would wait for them forever:
  // end them before fastify stops accepting and waits for in-flight requests.
  const openWatches = new Set<BundleChangeSubscription>();
  fastify.addHook('preClose', async () => {
    for (const sub of openWatches) sub.close();
  });

  // Bodies are read as text whatever the content type and parsed per endpoint (Go ignores
  // Content-Type too), so every malformed body gets the endpoint's own 400 code.
  fastify.removeAllContentTypeParsers();
  fastify.addContentTypeParser('*', { parseAs: 'string', bodyLimit }, (_req, body, done) => done(null, body));

  fastify.setErrorHandler((err: { statusCode?: number; code?: string; message?: string }, req, reply) => {
    const status = err.statusCode ?? 500;
    if (status === 413) {
      return sendJson(reply, 413, {
        error: 'invalid_request',
        message: `request body exceeds ${bodyLimit} bytes`,
      });
    }
    if (status >= 400 && status < 500) {
      return sendJson(reply, status, { error: 'invalid_request', message: err.message ?? 'invalid request' });
    }
    req.log.error({ err }, 'oversync: unhandled error');
    return sendJson(reply, 500, { error: 'internal_error', message: 'internal server error' });
  });

  const resolveActor = async (
    req: FastifyRequest,
  ): Promise<Actor | { error: WireErrorCode; message: string }> => {
    let userId: string | null | undefined;
    try {
      userId = await opts.userIdFromRequest(req);
    } catch {
      userId = undefined;
    }
    const uid = typeof userId === 'string' ? userId.trim() : '';
    if (!uid) {
      return {
        error: 'authentication_failed',
        message: 'authenticated user_id not found in request context',
      };
    }
    const userProblem = identityProblem(uid);
    if (userProblem)
      return { error: 'authentication_failed', message: `authenticated user_id ${userProblem}` };
    const header = req.headers[SOURCE_ID_HEADER.toLowerCase()];
    const sid = (Array.isArray(header) ? header[0] : header)?.trim() ?? '';
    if (!sid) return { error: 'invalid_request', message: `${SOURCE_ID_HEADER} header is required` };
    const sourceProblem = identityProblem(sid);
    if (sourceProblem)
      return { error: 'invalid_request', message: `${SOURCE_ID_HEADER} header ${sourceProblem}` };
    return { userId: uid, sourceId: sid };
  };

  const mount = (def: RouteDef) => {
    fastify.route({
      method: def.method,
      url: def.url,
      handler: async (req, reply) => {
        let actor: Actor = { userId: '', sourceId: '' };
        if (def.actor) {
          const a = await resolveActor(req);
          if ('error' in a) return sendError(reply, a.error, a.message);
          actor = a;
          req.oversyncActor = a;
        }
        const ac = new AbortController();
        const onClose = () => {
          if (!reply.raw.writableEnded) ac.abort(new Error('client closed the request'));
        };
        reply.raw.once('close', onClose);
        try {
          const result = await def.handler(req, reply, actor, ac.signal);
          if (reply.sent) return reply;
          if (result === undefined) return reply.code(204).send();
          return sendJson(reply, 200, result);
        } catch (e) {
          if (reply.sent) return reply;
          if (isSyncServerError(e) && e.wireCode !== undefined) {
            return sendError(reply, e.wireCode, e.message, e.body);
          }
          req.log.error({ err: e, route: def.url }, 'oversync: operation failed');
          return sendError(reply, def.failCode, def.failMessage);
        } finally {
          if (reply.raw.writableEnded) reply.raw.removeListener('close', onClose);
        }
      },
    });
  };

  const routes: RouteDef[] = [
    {
      method: 'POST',
      url: '/sync/connect',
      failCode: 'connect_failed',
      failMessage: 'Failed to connect',
      actor: true,
      handler: (req, _reply, actor, signal) =>
        service.connect(
          actor,
          parseBody(req, connectRequestSchema, 'invalid_request', 'Failed to parse connect request'),
          { signal },
        ),
    },
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
        const create: { source_bundle_id: number; planned_row_count: number; initialization_id?: string } = {
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
      handler: (req, _reply, actor, signal) => {
        const plain = plainChunkBody(req.body);
        if (plain) return service.uploadPushChunk(actor, pathParam(req, 'push_id'), plain, { signal });
        const body = parseBody(
          req,
          pushSessionChunkRequestSchema,
          'invalid_request',
          'Failed to parse push chunk request',
        );
        return service.uploadPushChunk(
          actor,
          pathParam(req, 'push_id'),
          {
            start_row_ordinal: body.start_row_ordinal,
            rows: (body.rows ?? []).map((r) => {
              const row: {
                schema: string;
                table: string;
                key: Record<string, unknown>;
                op: string;
                base_row_version: number;
                payload?: unknown;
              } = {
                schema: r.schema,
                table: r.table,
                key: r.key ?? {},
                op: r.op,
                base_row_version: r.base_row_version,
              };
              if (Object.hasOwn(r, 'payload')) row.payload = r.payload;
              return row;
            }),
          },
          { signal },
        );
      },
    },
    {
      method: 'POST',
      url: '/sync/push-sessions/:push_id/commit',
      failCode: 'push_session_commit_failed',
      failMessage: 'Failed to commit push session',
      actor: true,
      handler: (req, _reply, actor, signal) =>
        service.commitPushSession(actor, pathParam(req, 'push_id'), { signal }),
    },
    {
      method: 'DELETE',
      url: '/sync/push-sessions/:push_id',
      failCode: 'push_session_delete_failed',
      failMessage: 'Failed to delete push session',
      actor: true,
      handler: async (req, _reply, actor, signal) => {
        await service.deletePushSession(actor, pathParam(req, 'push_id'), { signal });
        return undefined;
      },
    },
    {
      method: 'GET',
      url: '/sync/committed-bundles/:bundle_seq/rows',
      failCode: 'committed_bundle_rows_failed',
      failMessage: 'Failed to load committed bundle rows',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const code = 'committed_bundle_chunk_invalid';
        const seq = parseGoInt(pathParam(req, 'bundle_seq'));
        if (seq === undefined) throw wireError(code, 'bundle_seq must be an integer');
        if (seq <= 0) throw wireError(code, 'bundle_seq must be > 0');
        const after = intParam(req, 'after_row_ordinal', code, { min: 0 });
        const maxRows = intParam(req, 'max_rows', code, { min: 1 });
        return service.getCommittedBundleRows(
          actor,
          seq,
          { afterRowOrdinal: after, maxRows },
          { signal, rawPayloads: true },
        );
      },
    },
    {
      method: 'GET',
      url: '/sync/pull',
      failCode: 'pull_failed',
      failMessage: 'Failed to pull bundles',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const code = 'invalid_request';
        const after = intParam(req, 'after_bundle_seq', code, { min: 0, def: 0 })!;
        const maxBundles = intParam(req, 'max_bundles', code, { min: 1, def: 1000 })!;
        if (maxBundles > MAX_BUNDLES_PER_PULL)
          throw wireError(code, `max_bundles must be <= ${MAX_BUNDLES_PER_PULL}`);
        const target = intParam(req, 'target_bundle_seq', code, { min: 0, def: 0 })!;
        return service.pull(
          actor,
          { afterBundleSeq: after, maxBundles, targetBundleSeq: target },
          { signal, rawPayloads: true },
        );
      },
    },
    {
      method: 'POST',
      url: '/sync/snapshot-sessions',
      failCode: 'snapshot_session_create_failed',
      failMessage: 'Failed to create snapshot session',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const raw = typeof req.body === 'string' ? req.body : '';
        let body: SnapshotSessionCreateRequest = {};
        if (raw.trim() !== '') {
          const parsed = parseBody(
            req,
            snapshotSessionCreateRequestSchema,
            'snapshot_session_invalid',
            'Failed to parse snapshot session request',
          );
          if (parsed.source_replacement) body = { source_replacement: parsed.source_replacement };
        }
        return service.createSnapshotSession(actor, body, { signal });
      },
    },
    {
      method: 'GET',
      url: '/sync/snapshot-sessions/:snapshot_id',
      failCode: 'snapshot_chunk_failed',
      failMessage: 'Failed to load snapshot chunk',
      actor: true,
      handler: (req, _reply, actor, signal) => {
        const code = 'snapshot_chunk_invalid';
        const after = intParam(req, 'after_row_ordinal', code, { min: 0, def: 0 });
        const maxRows = intParam(req, 'max_rows', code, { min: 1 });
        return service.getSnapshotChunk(
          actor,
          pathParam(req, 'snapshot_id'),
          { afterRowOrdinal: after, maxRows },
          { signal, rawPayloads: true },
        );
      },
    },
    {
      method: 'DELETE',
      url: '/sync/snapshot-sessions/:snapshot_id',
      failCode: 'snapshot_session_delete_failed',
      failMessage: 'Failed to delete snapshot session',
      actor: true,
      handler: async (req, _reply, actor, signal) => {
        await service.deleteSnapshotSession(actor, pathParam(req, 'snapshot_id'), { signal });
        return undefined;
      },
    },
    {
      method: 'GET',
      url: '/sync/watch',
      failCode: 'bundle_change_watch_failed',
      failMessage: 'Failed to watch bundle changes',
      actor: true,
      handler: async (req, reply, actor, signal) => {
        const enabled = service.options.bundleChangeWatch.enabled;
        if (enabled && opts.bundleChangeWatchAllowed && !(await opts.bundleChangeWatchAllowed(req, actor))) {
          throw wireError(
            'bundle_change_watch_forbidden',
            'Bundle change watch is not enabled for this client',
          );
        }
        const after = intParam(req, 'after_bundle_seq', 'invalid_request', { min: 0, def: 0 })!;
        const sub = await service.watchBundleChanges(actor, { afterBundleSeq: after }, { signal });
        openWatches.add(sub);
        try {
          await streamBundleEvents(reply, sub, service.options.bundleChangeWatch.heartbeatIntervalMs);
        } finally {
          openWatches.delete(sub);
        }
        return undefined;
      },
    },
    {
      method: 'GET',
      url: '/sync/capabilities',
      failCode: 'invalid_request',
      failMessage: 'Failed to load capabilities',
      actor: true,
      handler: async (req, _reply, actor) => {
        const allowed = opts.bundleChangeWatchAllowed
          ? await opts.bundleChangeWatchAllowed(req, actor)
          : true;
        return service.capabilities({ watchAllowed: allowed });
      },
    },
    {
      method: 'GET',
      url: '/syncx/status',
      failCode: 'status_failed',
      failMessage: 'Failed to load status',
      actor: false,
      handler: (_req, _reply, _actor, signal) => service.status({ signal }),
    },
    {
      method: 'GET',
      url: '/syncx/health',
      failCode: 'health_failed',
      failMessage: 'Failed to load health',
      actor: false,
      handler: async (_req, reply, _actor, signal) => {
        const s = await service.status({ signal });
        sendJson(reply, s.status === 'healthy' ? 200 : 503, s);
        return s;
      },
    },
  ];
  for (const r of routes) mount(r);

  // Wrong method on a known path ⇒ 405 method_not_allowed (the reference's handler prelude).
  const byUrl = new Map<string, Set<string>>();
  for (const r of routes) {
    const s = byUrl.get(r.url) ?? new Set<string>();
    s.add(r.method);
    byUrl.set(r.url, s);
  }
  for (const [url, methods] of byUrl) {
    const others = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'].filter((m) => !methods.has(m));
    const allowed = [...methods].join(', ');
    fastify.route({
      method: others as ('GET' | 'POST' | 'PUT' | 'DELETE' | 'PATCH')[],
      url,
      exposeHeadRoute: false,
      handler: async (_req, reply) =>
        sendError(
          reply,
          'method_not_allowed',
          `Only ${allowed} method${methods.size > 1 ? 's are' : ' is'} allowed`,
        ),
    });
  }
}

export type { RouteDef };

/** Server-sent events: `event: bundle` frames and `: heartbeat` comments until either side closes. */
async function streamBundleEvents(
  reply: FastifyReply,
  sub: BundleChangeSubscription,
  heartbeatMs: number,
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  const headers: Record<string, string> = {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  };
  // A stream ends when either side closes, and its HTTP/1.1 connection is not reused afterwards:
  // the server closes it at once. Otherwise `app.close()` waited until the client closed its side
  // (undici: 4 s after a client dropped the stream) or fastify's keepAliveTimeout (72 s) ran out.
  const http1 = reply.request.raw.httpVersionMajor < 2;
  const socket = http1 ? reply.request.raw.socket : undefined;
  if (http1) headers['connection'] = 'close';
  raw.writeHead(200, headers);
  raw.flushHeaders();
  const onClose = () => sub.close();
  raw.once('close', onClose);
  const heartbeat = setInterval(() => {
    if (!raw.writableEnded) raw.write(': heartbeat\n\n');
  }, heartbeatMs);
  heartbeat.unref();
  try {
    for await (const e of sub) {
      if (raw.writableEnded || raw.destroyed) break;
      raw.write(`event: bundle\ndata: ${goEscapeJsonText(JSON.stringify(e))}\n\n`);
    }
  } finally {
    clearInterval(heartbeat);
    raw.removeListener('close', onClose);
    sub.close();
    if (!raw.writableEnded && !raw.destroyed) raw.end(() => socket?.destroy());
    else socket?.destroy();
  }
}
