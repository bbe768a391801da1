/**
 * Reading a request the way the reference's handlers do: JSON bodies (every failure the
 * endpoint's own 400 code) and Go-syntax integers (the path and query parameters' schemas are in
 * params.ts).
 */
import type { FastifyRequest } from 'fastify';
import type { z } from 'zod';
import type { WireErrorCode } from '../../../shared/wire.js';
import { wireError } from '../../errors.js';

/** Go `strconv.ParseInt` syntax: optional sign, decimal digits, nothing else (no trimming). */
const INT_RE = /^[+-]?\d+$/;

export function parseGoInt(s: string): number | undefined {
  if (!INT_RE.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
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
