/** The wire between processes: JSON-RPC 2.0 methods, their params schemas, PUB topics and wire errors. */
import { MAX_REQUEST_ID_LENGTH } from '@x/writecoordinator';
import { z } from 'zod';
import { type Applied, DbProxyError, WIRE_ERROR_CODES, type WireErrorCode, wireError } from './errors.js';

/** The JSON-RPC method that carries a forwarded write. */
export const METHOD_DB_WRITE = 'db.write';
/** Catch-up of commit events a subscriber missed: `{ meta, afterSeq }` → `{ events, complete }`. */
export const METHOD_DB_CHANGES = 'db.changes';
/** `{ meta }` → `{ epoch, seq, pid, instanceId }`. */
export const METHOD_DB_PING = 'db.ping';

/**
 * PUB topics (first frame); the second frame is JSON. This one carries the primary's
 * {@link HeartbeatPublication}.
 */
export const TOPIC_HEARTBEAT = 'hb';
/** PUB topic of one committed transaction: a {@link CommitPublication}. */
export const TOPIC_COMMIT = 'commit';
/**
 * PUB topic the primary publishes once as it closes, `{ epoch }`: secondaries go straight to the election.
 */
export const TOPIC_BYE = 'bye';

/** JSON-RPC 2.0 numeric codes. */
export const JSONRPC_PARSE_ERROR = -32700;
export const JSONRPC_INVALID_REQUEST = -32600;
export const JSONRPC_METHOD_NOT_FOUND = -32601;
export const JSONRPC_INVALID_PARAMS = -32602;
export const JSONRPC_INTERNAL_ERROR = -32603;
export const JSONRPC_SERVER_ERROR = -32000;

export function jsonRpcCodeFor(code: WireErrorCode): number {
  switch (code) {
    case 'METHOD_NOT_FOUND':
      return JSONRPC_METHOD_NOT_FOUND;
    case 'INVALID_PARAMS':
      return JSONRPC_INVALID_PARAMS;
    case 'INTERNAL':
      return JSONRPC_INTERNAL_ERROR;
    case 'PARSE_ERROR':
      return JSONRPC_PARSE_ERROR;
    case 'INVALID_REQUEST':
      return JSONRPC_INVALID_REQUEST;
    default:
      return JSONRPC_SERVER_ERROR;
  }
}

/** Proves the caller may write to this primary's database. */
export const authMetaSchema = z.object({
  epoch: z.number().int().nonnegative(),
  dbPath: z.string(),
  token: z.string(),
});
export type AuthMeta = z.infer<typeof authMetaSchema>;

export const writeMetaSchema = authMetaSchema.extend({
  /** The coordinator's idempotency key: the same limit on every side. */
  requestId: z.string().min(1).max(MAX_REQUEST_ID_LENGTH),
  sourceInstanceId: z.string().max(200),
  /** Epoch milliseconds; the primary refuses the write once it has passed. */
  deadline: z.number(),
});
/**
 * The `meta` of a forwarded `db.write`: the primary's epoch, database path and token (proof the
 * caller may write there), the write's `requestId`, the sending instance and the deadline (epoch
 * milliseconds) after which the primary refuses it.
 */
export type WriteMeta = z.infer<typeof writeMetaSchema>;

export const writeParamsSchema = z.object({
  meta: writeMetaSchema,
  method: z.string().min(1),
  /** Absent when the caller's params were `undefined` (JSON has no undefined). */
  params: z.unknown().optional(),
  /** `'full'` commits this write's batch under `synchronous = FULL`. */
  durability: z.enum(['normal', 'full']).optional(),
});
export type WriteParams = z.infer<typeof writeParamsSchema>;

export const changesParamsSchema = z.object({
  meta: authMetaSchema,
  afterSeq: z.number().int().nonnegative(),
});
export const pingParamsSchema = z.object({ meta: authMetaSchema });

/** A JSON-RPC 2.0 request; without `id` it is a notification (handled, never answered). */
export const requestSchema = z.object({
  jsonrpc: z.literal('2.0'),
  id: z.union([z.number(), z.string(), z.null()]).optional(),
  method: z.string(),
  params: z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).optional(),
});
export type JsonRpcRequest = z.infer<typeof requestSchema>;

export interface WriteResultWire {
  value: unknown;
  seq: number;
  replayed: boolean;
}

/** What goes on the wire in `error.data`. */
export interface ErrorData {
  code: WireErrorCode;
  retryable: boolean;
  applied: Applied;
  details?: Record<string, unknown>;
}

export interface JsonRpcError {
  code: number;
  message: string;
  data?: ErrorData;
}

export type JsonRpcResponse =
  | { jsonrpc: '2.0'; id: number | string | null; result: unknown }
  | { jsonrpc: '2.0'; id: number | string | null; error: JsonRpcError };

/** One committed transaction as published: every write it carried, in order. */
export interface CommitPublication {
  seq: number;
  epoch: number;
  writes: Array<{ method: string | null; requestId: string | null; sourceInstanceId: string | null }>;
}

/**
 * What the primary publishes on {@link TOPIC_HEARTBEAT} every `heartbeat.intervalMs`. A subscriber
 * whose last event is behind `seq` fetches what it missed.
 */
export interface HeartbeatPublication {
  /** The primary's epoch. */
  epoch: number;
  /** Its last committed sequence. */
  seq: number;
  /** Its process id. */
  pid: number;
  /** Its `instanceId`. */
  instanceId: string;
}

export function errorResponse(id: number | string | null, err: DbProxyError): JsonRpcResponse {
  const wire = err.wireCode ?? 'INTERNAL';
  const data: ErrorData = { code: wire, retryable: err.retryable, applied: err.applied };
  if (err.details !== undefined) data.details = err.details;
  return { jsonrpc: '2.0', id, error: { code: jsonRpcCodeFor(wire), message: err.message, data } };
}

const errorDataSchema = z.object({
  code: z.string(),
  retryable: z.boolean(),
  applied: z.enum(['no', 'unknown', 'yes']),
  details: z.record(z.string(), z.unknown()).optional(),
});

/** Rebuilds the typed error on the caller's side; a malformed error object becomes INTERNAL, applied unknown. */
export function errorFromWire(e: JsonRpcError): DbProxyError {
  const data = errorDataSchema.safeParse(e.data);
  if (data.success && (WIRE_ERROR_CODES as readonly string[]).includes(data.data.code)) {
    const init: ConstructorParameters<typeof DbProxyError>[2] = {
      retryable: data.data.retryable,
      applied: data.data.applied,
    };
    if (data.data.details !== undefined) init.details = data.data.details;
    return new DbProxyError(`DBPROXY_${data.data.code as WireErrorCode}`, e.message, init);
  }
  if (e.code === JSONRPC_METHOD_NOT_FOUND) return wireError('METHOD_NOT_FOUND', e.message);
  if (e.code === JSONRPC_INVALID_PARAMS) return wireError('INVALID_PARAMS', e.message);
  if (e.code === JSONRPC_PARSE_ERROR) return wireError('PARSE_ERROR', e.message);
  if (e.code === JSONRPC_INVALID_REQUEST) return wireError('INVALID_REQUEST', e.message);
  return wireError('INTERNAL', e.message, { applied: 'unknown', details: { jsonRpcCode: e.code } });
}
