/**
 * The checks every value a caller passes goes through, in one place, run on the calling side of
 * every process (primary and secondary alike) before anything is queued or sent, and by the primary
 * for what arrives over the wire. The rules are the same everywhere, so a write that is refused on
 * one process is refused on every other, with the same typed error, and a bad value never reaches a
 * shared link or batch.
 */
import { MAX_REQUEST_ID_LENGTH, type SqliteDatabase } from '@x/writecoordinator';
import { DbProxyError, wireError } from '../errors.js';
import type { AnyWriteMethod } from '../options.js';

/** The longest `timeoutMs` a call accepts: what a Node timer can hold (longer ones would fire at once). */
export const MAX_CALL_TIMEOUT_MS = 2_147_483_647;

export { MAX_REQUEST_ID_LENGTH };

export interface ResolvedWrite {
  method: string;
  handler: (db: SqliteDatabase, params: never) => unknown;
  /** The params as the handler gets them: parsed by the method's schema from their JSON form. */
  value: unknown;
  /** What travels on the wire: the params' JSON form (`undefined` when they were undefined). */
  wire: unknown;
  long: boolean;
}

export interface CallOptions {
  requestId?: unknown;
  timeoutMs?: unknown;
  durability?: unknown;
  minSeq?: unknown;
}

function invalidArgument(argument: string, message: string, details: Record<string, unknown> = {}) {
  return new DbProxyError('DBPROXY_INVALID_ARGUMENT', message, { details: { argument, ...details } });
}

/**
 * Checks the per-call options (`requestId`, `timeoutMs`, `durability`, `minSeq`): throws
 * DBPROXY_INVALID_ARGUMENT, not applied, at once.
 */
export function checkCallOptions(opts: CallOptions): void {
  const { requestId, timeoutMs, durability, minSeq } = opts;
  if (
    requestId !== undefined &&
    (typeof requestId !== 'string' || requestId.length === 0 || requestId.length > MAX_REQUEST_ID_LENGTH)
  ) {
    throw invalidArgument(
      'requestId',
      `requestId must be a string of 1 to ${MAX_REQUEST_ID_LENGTH} characters`,
      typeof requestId === 'string' ? { length: requestId.length } : { type: typeof requestId },
    );
  }
  if (
    timeoutMs !== undefined &&
    (typeof timeoutMs !== 'number' ||
      !Number.isInteger(timeoutMs) ||
      timeoutMs <= 0 ||
      timeoutMs > MAX_CALL_TIMEOUT_MS)
  ) {
    throw invalidArgument(
      'timeoutMs',
      `timeoutMs must be an integer from 1 to ${MAX_CALL_TIMEOUT_MS}`,
      typeof timeoutMs === 'number' ? { value: String(timeoutMs) } : { type: typeof timeoutMs },
    );
  }
  if (durability !== undefined && durability !== 'normal' && durability !== 'full') {
    throw invalidArgument('durability', "durability must be 'normal' or 'full'");
  }
  if (minSeq !== undefined && (typeof minSeq !== 'number' || !Number.isSafeInteger(minSeq) || minSeq < 0)) {
    throw invalidArgument('minSeq', 'minSeq must be a non-negative integer');
  }
}

/**
 * The params as the primary will see them: their JSON form. Throws DBPROXY_PARAMS_NOT_SERIALISABLE
 * for what JSON cannot carry (a BigInt, a cycle, a throwing `toJSON`). Whatever JSON silently
 * changes (a Date becomes a string, `undefined` members vanish) is then judged by the method's
 * schema, on every process alike.
 */
export function toWireParams(method: string, params: unknown): unknown {
  let json: string | undefined;
  try {
    json = JSON.stringify(params);
  } catch (e) {
    throw new DbProxyError('DBPROXY_PARAMS_NOT_SERIALISABLE', `params of ${method} cannot be sent as JSON`, {
      details: { method, reason: e instanceof Error ? e.message : String(e) },
      cause: e,
    });
  }
  return json === undefined ? undefined : JSON.parse(json);
}

/** Looks the method up and checks its (JSON-form) params with its schema. */
export function resolveWrite(
  writes: Readonly<Record<string, AnyWriteMethod>>,
  method: string,
  wire: unknown,
): ResolvedWrite {
  const def = typeof method === 'string' && Object.hasOwn(writes, method) ? writes[method] : undefined;
  if (def === undefined) {
    throw wireError(
      'METHOD_NOT_FOUND',
      `no write method ${String(JSON.stringify(method)).slice(0, 100)} is registered`,
      { details: { method: typeof method === 'string' ? method.slice(0, 200) : null } },
    );
  }
  const parsed = def.params.safeParse(wire);
  if (!parsed.success) {
    throw wireError('INVALID_PARAMS', `invalid params for ${method}`, {
      details: { method, issues: parsed.error.issues.map((i) => ({ path: i.path, message: i.message })) },
    });
  }
  return { method, handler: def.handler, value: parsed.data, wire, long: def.long === true };
}

/** Everything a local `write` call passes, checked at once: options, then method and params. */
export function checkWriteCall(
  writes: Readonly<Record<string, AnyWriteMethod>>,
  method: string,
  params: unknown,
  opts: CallOptions,
): ResolvedWrite {
  checkCallOptions(opts);
  if (typeof method !== 'string' || !Object.hasOwn(writes, method))
    return resolveWrite(writes, method, undefined);
  return resolveWrite(writes, method, toWireParams(method, params));
}
