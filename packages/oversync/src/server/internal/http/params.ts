/**
 * The zod schemas of the routes' path and query parameters. The routes validate with them and the
 * OpenAPI document (../../openapi/) is generated from them, so the two cannot disagree. Integers
 * follow Go's `strconv.ParseInt` (see `parseGoInt`); the messages are the reference's.
 */
import { z } from 'zod';
import type { WireErrorCode } from '../../../shared/wire.js';
import { wireError } from '../../errors.js';
import { MAX_BUNDLES_PER_PULL } from '../../options.js';
import { parseGoInt } from './request.js';

/** A Go-syntax integer in a query string or path: the first value of a repeated parameter, '' as absent. */
function goIntText(v: unknown): unknown {
  const first = Array.isArray(v) ? v[0] : v;
  if (first === undefined || first === '') return undefined;
  if (typeof first !== 'string') return first;
  return parseGoInt(first) ?? first;
}

interface IntBounds {
  /** Smallest accepted value (`name must be >= min`). */
  readonly min?: number;
  /** Values must be above it (`name must be > gt`). */
  readonly gt?: number;
  /** Largest accepted value (`name must be <= max`). */
  readonly max?: number;
}

function goInt(name: string, bounds: IntBounds, description: string) {
  let n = z.number({ error: `${name} must be an integer` }).int({ error: `${name} must be an integer` });
  if (bounds.gt !== undefined) n = n.gt(bounds.gt, { error: `${name} must be > ${bounds.gt}` });
  if (bounds.min !== undefined) n = n.min(bounds.min, { error: `${name} must be >= ${bounds.min}` });
  if (bounds.max !== undefined) n = n.max(bounds.max, { error: `${name} must be <= ${bounds.max}` });
  return n.meta({ description });
}

/** An optional integer query parameter: absent or empty ⇒ undefined (the service's default). */
function goIntQuery(name: string, bounds: IntBounds, description: string) {
  return z.preprocess(goIntText, goInt(name, bounds, description).optional()).optional();
}

export const pushIdParamsSchema = z.object({
  push_id: z.string().meta({ description: 'The push session id (`push_id` of the create response).' }),
});
export const snapshotIdParamsSchema = z.object({
  snapshot_id: z
    .string()
    .meta({ description: 'The snapshot session id (`snapshot_id` of the create response).' }),
});
export const bundleSeqParamsSchema = z.object({
  bundle_seq: z.preprocess(goIntText, goInt('bundle_seq', { gt: 0 }, 'A committed bundle of the user.')),
});

/** Paging of a committed bundle's rows or a snapshot's rows. */
export const rowPageQuerySchema = z.object({
  after_row_ordinal: goIntQuery('after_row_ordinal', { min: 0 }, 'Rows after this ordinal (default 0).'),
  max_rows: goIntQuery(
    'max_rows',
    { min: 1 },
    'Largest page (default and upper bound: the server limits in `bundle_limits` of the capabilities).',
  ),
});
export const pullQuerySchema = z.object({
  after_bundle_seq: goIntQuery('after_bundle_seq', { min: 0 }, 'Bundles after this one (default 0).'),
  max_bundles: goIntQuery(
    'max_bundles',
    { min: 1, max: MAX_BUNDLES_PER_PULL },
    'Largest number of bundles answered (default: the server default).',
  ),
  target_bundle_seq: goIntQuery(
    'target_bundle_seq',
    { min: 0 },
    'Bundle the pull stops at (0 or absent: the current stable bundle).',
  ),
});
export const watchQuerySchema = z.object({
  after_bundle_seq: goIntQuery(
    'after_bundle_seq',
    { min: 0 },
    'Events of bundles after this one (default 0).',
  ),
});

/**
 * The path parameters or query string of a request (`req.params`, `req.query`) through `schema`;
 * the first problem is `code` with its message (400 for every code used here).
 */
export function parseParams<T>(value: unknown, schema: z.ZodType<T>, code: WireErrorCode): T {
  const r = schema.safeParse(value ?? {});
  if (r.success) return r.data;
  throw wireError(code, r.error.issues[0]?.message ?? 'invalid request');
}
