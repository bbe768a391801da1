/**
 * The OpenAPI 3.1 document of the sync HTTP API, generated from the zod schemas the routes
 * validate with (operations.ts). Schema objects are JSON Schema 2020-12 (zod's `toJSONSchema`):
 * requests as their input, responses as their output.
 */
import { z } from 'zod';
import { SOURCE_ID_HEADER, SYNC_PROTOCOL_VERSION, type WireErrorCode } from '../../shared/wire.js';
import { WIRE_ERROR_STATUS } from '../errors.js';
import { METHODS } from '../internal/http/route.js';
import { OPERATIONS, type OperationSpec } from './operations.js';
import { errorBodySchema } from './schemas.js';

/** An OpenAPI 3.1 document (plain JSON), as `oversyncOpenApiDocument` builds it. */
export interface OpenApiDocument {
  /** The OpenAPI version, `3.1.0`. */
  openapi: '3.1.0';
  /** Title, version (the protocol's, `v1`) and a description of the conventions. */
  info: { title: string; version: string; description?: string };
  /** Where the API is served, when the options gave it. */
  servers?: Array<{ url: string; description?: string }>;
  /** Every path (OpenAPI syntax, `{param}`) and its operations by lower-case method. */
  paths: Record<string, Record<string, OpenApiOperation>>;
  /** The security scheme of the actor routes (`hostAuth`). */
  components: { securitySchemes: Record<string, Record<string, unknown>> };
  /** The operation groups: connect, push, pull, watch, snapshot, operator. */
  tags: Array<{ name: string; description: string }>;
}

/** One operation of `paths` (the fields this document uses). */
export interface OpenApiOperation {
  /** A stable id (absent on the 405 answers of a wrong method). */
  operationId?: string;
  /** Its group. */
  tags?: string[];
  /** One line on what it does. */
  summary: string;
  /** More, when there is more to say. */
  description?: string;
  /** `[{ hostAuth: [] }]` for the actor routes, `[]` for the others. */
  security: Array<Record<string, string[]>>;
  /** Path, query and header (`Oversync-Source-ID`) parameters. */
  parameters?: Array<Record<string, unknown>>;
  /** The JSON body, when the route reads one. */
  requestBody?: Record<string, unknown>;
  /** Every status the route answers, with its body's schema (JSON Schema 2020-12). */
  responses: Record<string, { description: string; content?: Record<string, Record<string, unknown>> }>;
}

/** Options of {@link oversyncOpenApiDocument}. */
export interface OversyncOpenApiOptions {
  /** The prefix the plugin is registered under (fastify's `prefix`), before every path. Default none. */
  prefix?: string;
  /** The document's `servers`. Default none (paths are relative to the document's host). */
  servers?: Array<{ url: string; description?: string }>;
  /** `info.title` (default `oversync sync API`). */
  title?: string;
  /** `info.version` (default the protocol version, `v1`). */
  version?: string;
  /**
   * The security scheme of the actor routes (default HTTP bearer). The plugin does not authenticate:
   * the host's `userIdFromRequest` does, so describe what the host checks.
   */
  securityScheme?: Record<string, unknown>;
}

const SECURITY_SCHEME = 'hostAuth';
const ERROR_DESCRIPTIONS: Partial<Record<number, string>> = {
  400: 'Invalid request',
  401: 'Not authenticated',
  403: 'Forbidden',
  404: 'Not found',
  405: 'Method not allowed',
  409: 'Conflict with the scope or source state',
  410: 'Expired',
  413: 'Request body over the body limit',
  500: 'The server or its database failed',
  503: 'Unavailable: retry later',
};
/** Methods whose body fastify reads (and refuses over the body limit with 413). */
const BODY_METHODS: ReadonlySet<string> = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { target: 'draft-2020-12', io }) as Record<
    string,
    unknown
  >;
  return rest;
}

const json = (schema: Record<string, unknown>) => ({ 'application/json': { schema } });

/** `/a/:b/c` → `/a/{b}/c`. */
export function openApiPath(url: string, prefix = ''): string {
  return `${prefix}${url}`.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parameters(op: OperationSpec): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const [where, schema] of [
    ['path', op.params],
    ['query', op.query],
  ] as const) {
    if (!schema) continue;
    const obj = jsonSchema(schema, 'input') as {
      properties?: Record<string, Record<string, unknown>>;
      required?: string[];
    };
    for (const [name, prop] of Object.entries(obj.properties ?? {})) {
      out.push({
        name,
        in: where,
        required: where === 'path' || (obj.required ?? []).includes(name),
        ...(typeof prop['description'] === 'string' ? { description: prop['description'] } : {}),
        schema: prop,
      });
    }
  }
  if (op.actor) {
    out.push({
      name: SOURCE_ID_HEADER,
      in: 'header',
      required: true,
      description:
        'The sync source (device) id: the only source of it. Missing, blank, over 512 UTF-8 bytes or with control characters ⇒ 400 `invalid_request`.',
      schema: { type: 'string' },
    });
  }
  return out;
}

/** The error responses of `codes` (and 413 for a method with a body), one per status. */
function errorResponses(method: string, codes: readonly WireErrorCode[]): OpenApiOperation['responses'] {
  const byStatus = new Map<number, WireErrorCode[]>();
  const add = (status: number, code: WireErrorCode) => {
    const list = byStatus.get(status) ?? [];
    if (!list.includes(code)) list.push(code);
    byStatus.set(status, list);
  };
  for (const code of codes) add(WIRE_ERROR_STATUS[code], code);
  if (BODY_METHODS.has(method)) {
    add(413, 'invalid_request');
    // fastify refuses a malformed body (a Content-Length it does not match) as 400.
    add(400, 'invalid_request');
  }
  const out: OpenApiOperation['responses'] = {};
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) {
    const list = byStatus.get(status) ?? [];
    out[String(status)] = {
      description: `${ERROR_DESCRIPTIONS[status] ?? 'Error'}: ${list.map((c) => `\`${c}\``).join(', ')}.`,
      content: json(jsonSchema(errorBodySchema(list), 'output')),
    };
  }
  return out;
}

function operation(op: OperationSpec): OpenApiOperation {
  const responses: OpenApiOperation['responses'] = {};
  const s = op.success;
  if (s.status === 204) responses['204'] = { description: s.description };
  else if ('events' in s) {
    responses['200'] = {
      description: s.description,
      content: {
        'text/event-stream': {
          schema: { type: 'string' },
          'x-oversync-event-data': jsonSchema(s.events, 'output'),
        },
      },
    };
  } else responses['200'] = { description: s.description, content: json(jsonSchema(s.schema, 'output')) };
  for (const o of op.other ?? [])
    responses[String(o.status)] = {
      description: o.description,
      content: json(jsonSchema(o.schema, 'output')),
    };
  for (const [status, r] of Object.entries(errorResponses(op.method, op.errors))) {
    if (responses[status]) throw new Error(`${op.method} ${op.url}: status ${status} answered twice`);
    responses[status] = r;
  }
  const params = parameters(op);
  return {
    operationId: op.operationId,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    security: op.actor ? [{ [SECURITY_SCHEME]: [] }] : [],
    ...(params.length ? { parameters: params } : {}),
    ...(op.body
      ? {
          requestBody: {
            required: op.body.required,
            description: op.body.description,
            content: json(jsonSchema(op.body.schema, 'input')),
          },
        }
      : {}),
    responses,
  };
}

/** A wrong method on a known path: 405 `method_not_allowed` (after the body limit for a body). */
function methodNotAllowed(method: string, allowed: readonly string[]): OpenApiOperation {
  return {
    summary: `Method not allowed (only ${allowed.join(', ')})`,
    security: [],
    responses: errorResponses(method, ['method_not_allowed']),
  };
}

/**
 * The OpenAPI 3.1 document of the sync HTTP API the fastify plugin mounts: every path and method
 * (a wrong method on a known path included: 405), parameters, request bodies, every status with its
 * body. fastify also answers `HEAD` for every `GET` (same status and headers, no body); the
 * document leaves those out. The plugin serves it at `GET /sync/openapi.json`.
 *
 * @example
 * ```ts
 * import { oversyncOpenApiDocument } from '@x/oversync/server';
 *
 * const doc = oversyncOpenApiDocument({ prefix: '/api', servers: [{ url: 'https://sync.example.com' }] });
 * console.log(Object.keys(doc.paths)); // ['/api/sync/connect', …]
 * ```
 */
export function oversyncOpenApiDocument(options: OversyncOpenApiOptions = {}): OpenApiDocument {
  const prefix = options.prefix?.replace(/\/+$/, '') ?? '';
  const paths: OpenApiDocument['paths'] = {};
  const byUrl = new Map<string, OperationSpec[]>();
  for (const op of OPERATIONS) byUrl.set(op.url, [...(byUrl.get(op.url) ?? []), op]);
  for (const [url, ops] of byUrl) {
    const item: Record<string, OpenApiOperation> = {};
    const allowed = ops.map((o) => o.method);
    for (const op of ops) item[op.method.toLowerCase()] = operation(op);
    for (const m of METHODS)
      if (!allowed.includes(m as OperationSpec['method']))
        item[m.toLowerCase()] = methodNotAllowed(m, allowed);
    paths[openApiPath(url, prefix)] = item;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: options.title ?? 'oversync sync API',
      version: options.version ?? SYNC_PROTOCOL_VERSION,
      description: [
        'go-oversync protocol v1 over HTTP, as served by the @x/oversync fastify plugin.',
        'Every error is `application/json` `{"error": code, "message": text}`; each code has one status.',
        "Request bodies are decoded like Go's encoding/json: field names match case-insensitively, `null` or a missing field is the zero value, unknown fields are ignored (except in the snapshot request).",
        'fastify also answers `HEAD` for every `GET` (same status, no body); those are not listed.',
      ].join('\n\n'),
    },
    ...(options.servers ? { servers: options.servers } : {}),
    tags: [
      { name: 'connect', description: 'Connect and capabilities.' },
      { name: 'push', description: 'Push sessions: create, upload chunks, commit.' },
      { name: 'pull', description: 'Pull committed bundles and page their rows.' },
      { name: 'watch', description: 'Committed-bundle events (server-sent events).' },
      { name: 'snapshot', description: 'Snapshot sessions: rebuild a device from a frozen scope.' },
      { name: 'operator', description: 'Status, health and this document (no authentication).' },
    ],
    paths,
    components: {
      securitySchemes: {
        [SECURITY_SCHEME]: options.securityScheme ?? {
          type: 'http',
          scheme: 'bearer',
          description:
            "The host's authentication (the plugin's `userIdFromRequest`), e.g. a JWT whose `sub` is the user id. None or an unacceptable user id ⇒ 401 `authentication_failed`.",
        },
      },
    },
  };
}
