/**
 * Reading a request the way the reference's handlers do: JSON bodies (every failure the
 * endpoint's own 400 code), Go-syntax integer query parameters, path parameters.
 */
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { WireErrorCode } from '../../../shared/wire.js';
import { wireError } from '../../errors.js';

/** Go `strconv.ParseInt` syntax: optional sign, decimal digits, nothing else (no trimming). */
const INT_RE = /^[+-]?\d+$/;

export function parseGoInt(s: string): number | undefined {
  if (!INT_RE.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

const queryString = z.union([z.string(), z.array(z.string())]).optional();
const querySchema = z.record(z.string(), queryString);
const paramsSchema = z.record(z.string(), z.string());

function firstQuery(req: FastifyRequest, name: string): string | undefined {
  const q = querySchema.safeParse(req.query ?? {});
  if (!q.success) return undefined;
  const v = q.data[name];
  return Array.isArray(v) ? v[0] : v;
}

/** An integer query parameter, at least `min`; absent or empty ⇒ undefined (the service's default). */
export function intParam(
  req: FastifyRequest,
  name: string,
  code: WireErrorCode,
  min: number,
): number | undefined {
  const s = firstQuery(req, name);
  if (s === undefined || s === '') return undefined;
  const n = parseGoInt(s);
  if (n === undefined) throw wireError(code, `${name} must be an integer`);
  if (n < min) throw wireError(code, `${name} must be >= ${min}`);
  return n;
}

export function pathParam(req: FastifyRequest, name: string): string {
  const p = paramsSchema.safeParse(req.params);
  return p.success ? (p.data[name] ?? '') : '';
}

/** The request body as text ('' when there is none); bodies are read as text whatever the type. */
export function bodyText(req: FastifyRequest): string {
  return typeof req.body === 'string' ? req.body : '';
}

/** Parses a JSON body the way the reference's handlers do; failures are `code` 400s. */
export function parseBody<T>(
  req: FastifyRequest,
  schema: z.ZodType<T>,
  code: WireErrorCode,
  message: string,
): T {
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
