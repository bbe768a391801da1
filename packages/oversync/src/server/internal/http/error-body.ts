/**
 * Every body the fastify plugin answers with, in one place: JSON the way Go's `json.Encoder`
 * writes it, and the protocol's error body `{"error": code, "message": text, ...}` for each way a
 * request can fail — an operation's error, an unexpected failure (the endpoint's own 500 code), an
 * error fastify raised (body limit, malformed request), a URL its router refused, a wrong method.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WireErrorCode } from '../../../shared/wire.js';
import { isSyncServerError, WIRE_ERROR_STATUS } from '../../errors.js';
import { wireJson, wireJsonSliced } from '../../raw-json.js';

/** JSON as Go's `json.Encoder` writes it: HTML-safe escapes and a trailing newline. */
export function sendJson(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).header('content-type', 'application/json').send(wireJson(body));
}

/**
 * An operation's answer (status 200), encoded in slices (`wireJsonSliced`): a page of thousands
 * of rows does not hold the event loop for the whole of its encoding.
 */
export async function sendResult(reply: FastifyReply, body: unknown): Promise<FastifyReply> {
  const text = await wireJsonSliced(body);
  return reply.code(200).header('content-type', 'application/json').send(text);
}

/** The error body of `code`, with the one status the protocol gives it. */
export function sendError(
  reply: FastifyReply,
  code: WireErrorCode,
  message: string,
  extra?: Record<string, unknown>,
): FastifyReply {
  return sendJson(reply, WIRE_ERROR_STATUS[code], { error: code, message, ...extra });
}

/** What an endpoint answers when it fails unexpectedly (HTTP 500, never database details). */
export interface EndpointFailure {
  readonly failCode: WireErrorCode;
  readonly failMessage: string;
}

/**
 * An operation's error: its own wire code and body when it has one, otherwise the endpoint's
 * failure (logged with the cause).
 */
export function sendOperationError(
  req: FastifyRequest,
  reply: FastifyReply,
  e: unknown,
  route: EndpointFailure & { readonly url: string },
): FastifyReply {
  if (isSyncServerError(e) && e.wireCode !== undefined)
    return sendError(reply, e.wireCode, e.message, e.body);
  req.log.error({ err: e, route: route.url }, 'oversync: operation failed');
  return sendError(reply, route.failCode, route.failMessage);
}

/**
 * An error fastify raised around a route (the body limit, a malformed request): a 413 or 4xx is
 * `invalid_request` with its status, anything else a logged 500 `internal_error`.
 */
export function sendFrameworkError(
  req: FastifyRequest,
  reply: FastifyReply,
  err: { statusCode?: number; code?: string; message?: string },
  bodyLimit: number,
): FastifyReply {
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
}

/** A request fastify's router refused before any route ran (see `oversyncFrameworkErrors`). */
export function sendRouterError(reply: FastifyReply, error: { statusCode?: number }): FastifyReply {
  const status =
    error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
      ? error.statusCode
      : 400;
  return sendJson(reply, status, { error: 'invalid_request', message: 'malformed request URL' });
}

/** A known path asked with a method it does not serve (the reference's handler prelude). */
export function sendMethodNotAllowed(reply: FastifyReply, allowed: readonly string[]): FastifyReply {
  return sendError(
    reply,
    'method_not_allowed',
    `Only ${allowed.join(', ')} method${allowed.length > 1 ? 's are' : ' is'} allowed`,
  );
}
