import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { sleep as coreSleep } from '@x/core';
import type { z } from 'zod';
import { errorResponseSchema, SOURCE_ID_HEADER } from '../../shared/wire.js';
import { ClientError } from '../errors.js';
import type { FetchLike, Logger, RetryPolicy, TokenSource } from '../transport-types.js';

export interface RequestSpec<T> {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  /** A body already serialised as JSON (sent as is; `body` is ignored). */
  bodyJson?: string;
  /** Validates a 2xx JSON body; omitted for 204 answers. */
  schema?: z.ZodType<T>;
  /**
   * Validates the answer's row arrays in slices that give the event loop a turn (a 5,000-row page
   * validated in one piece is a long block): the `rows` of the body, or of each of its `bundles`,
   * are checked with `rows` row by row, and `schema` checks the rest with those arrays set aside.
   * A row `plain` accepts is taken as it is (it must be exactly what `schema` would answer for it,
   * e.g. wire-responses.ts#isPlainSnapshotRow); the others go through `schema`.
   */
  rows?: { schema: z.ZodType; in: 'body' | 'bundles'; plain?: (row: unknown) => boolean };
  /** Retry this request under the retry policy, reporting exhaustion with this operation name. */
  retryOp?: string;
  signal?: AbortSignal;
}

const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);
const RETRYABLE_NET_RE =
  /ECONNRESET|EPIPE|ECONNREFUSED|ETIMEDOUT|UND_ERR|socket|other side closed|terminated|fetch failed|connection reset by peer|broken pipe|EOF/i;

/** Maps a non-2xx answer to a ClientError carrying the server's `{error, message}` envelope. */
export function httpError(status: number, body: unknown, path: string): ClientError {
  const parsed = errorResponseSchema.safeParse(body);
  const wire = parsed.success ? (parsed.data as Record<string, unknown>) : {};
  const serverCode = typeof wire.error === 'string' ? wire.error : '';
  const message = typeof wire.message === 'string' ? wire.message : `HTTP ${status}`;
  return new ClientError('OVERSYNC_CLIENT_HTTP', `${path}: ${status} ${serverCode || ''} ${message}`.trim(), {
    retryable: RETRYABLE_STATUS.has(status),
    details: { status, serverCode, serverMessage: message, body: parsed.success ? wire : body },
  });
}

export function serverCodeOf(e: unknown): string | undefined {
  if (e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_HTTP') return e.details.serverCode as string;
  return undefined;
}
export function statusOf(e: unknown): number | undefined {
  if (e instanceof ClientError && e.code === 'OVERSYNC_CLIENT_HTTP') return e.details.status as number;
  return undefined;
}

function abortError(signal: AbortSignal): ClientError {
  return new ClientError('OVERSYNC_CLIENT_ABORTED', 'operation aborted', { cause: signal.reason });
}

/**
 * Waits `ms` (@x/core's sleep); an abort of `signal` rejects with OVERSYNC_CLIENT_ABORTED carrying
 * the signal's reason as its cause.
 */
async function waitBackoff(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await coreSleep(ms, { signal });
  } catch (e) {
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}

/**
 * Validation gives the event loop a turn whenever it has run this long (short: the same turn may
 * run a slice of an apply too).
 */
const VALIDATE_SLICE_MS = 5;

/**
 * `schema` over `body` with its row arrays (see {@link RequestSpec.rows}) validated row by row in
 * slices of about {@link VALIDATE_SLICE_MS}: the same answer and the same failures as one
 * `schema.safeParse` (issues name the row's path), without one long block per page.
 */
async function validateInSlices<T>(
  schema: z.ZodType<T>,
  rows: NonNullable<RequestSpec<T>['rows']>,
  body: unknown,
  malformed: (issues: unknown[]) => ClientError,
  signal?: AbortSignal,
): Promise<T> {
  const isObj = (v: unknown): v is Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  // The arrays to check row by row, and the body with them set to null (the schemas allow null).
  const arrays: Array<{ path: (string | number)[]; list: unknown[] }> = [];
  let rest: unknown = body;
  if (isObj(body)) {
    if (rows.in === 'body' && Array.isArray(body.rows)) {
      arrays.push({ path: ['rows'], list: body.rows });
      rest = { ...body, rows: null };
    } else if (rows.in === 'bundles' && Array.isArray(body.bundles)) {
      const bundles = body.bundles.map((b, i) => {
        if (!isObj(b) || !Array.isArray(b.rows)) return b;
        arrays.push({ path: ['bundles', i, 'rows'], list: b.rows });
        return { ...b, rows: null };
      });
      rest = { ...body, bundles };
    }
  }
  const checked: unknown[][] = [];
  let t0 = performance.now();
  for (const a of arrays) {
    const out: unknown[] = new Array(a.list.length);
    for (let i = 0; i < a.list.length; i++) {
      const row = a.list[i];
      if (rows.plain?.(row)) out[i] = row;
      else {
        const r = rows.schema.safeParse(row);
        if (!r.success) {
          throw malformed(r.error.issues.map((iss) => ({ ...iss, path: [...a.path, i, ...iss.path] })));
        }
        out[i] = r.data;
      }
      if (performance.now() - t0 >= VALIDATE_SLICE_MS) {
        await yieldToLoop();
        if (signal?.aborted) throw abortError(signal);
        t0 = performance.now();
      }
    }
    checked.push(out);
  }
  const parsed = schema.safeParse(rest);
  if (!parsed.success) throw malformed(parsed.error.issues);
  // the validated envelope is a copy: put the validated rows back into it
  const data = parsed.data as Record<string, unknown>;
  if (rows.in === 'body' && arrays.length > 0) data.rows = checked[0];
  if (rows.in === 'bundles') {
    const bundles = data.bundles as Array<Record<string, unknown>>;
    arrays.forEach((a, k) => {
      const b = bundles[a.path[1] as number];
      if (b) b.rows = checked[k];
    });
  }
  return parsed.data;
}

/** The client's HTTP edge: JSON requests with bearer token and source id header, plus retry. */
export class Transport {
  readonly #baseUrl: string;
  readonly #fetch: FetchLike;
  readonly #token: TokenSource | undefined;
  readonly #retry: RetryPolicy;
  readonly #logger: Logger;
  sourceId = '';

  constructor(opts: {
    baseUrl: string;
    fetch: FetchLike;
    token: TokenSource | undefined;
    retry: RetryPolicy;
    logger: Logger;
  }) {
    this.#baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.#fetch = opts.fetch;
    this.#token = opts.token;
    this.#retry = opts.retry;
    this.#logger = opts.logger;
  }

  async headers(signal?: AbortSignal): Promise<Record<string, string>> {
    const h: Record<string, string> = { accept: 'application/json' };
    if (this.#token !== undefined) {
      const t = typeof this.#token === 'string' ? this.#token : await this.#token(signal ? { signal } : {});
      if (t) h.authorization = `Bearer ${t}`;
    }
    if (this.sourceId) h[SOURCE_ID_HEADER.toLowerCase()] = this.sourceId;
    return h;
  }

  url(path: string, query?: Record<string, string | number | undefined>): string {
    const qs = query
      ? Object.entries(query)
          .filter(([, v]) => v !== undefined)
          .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
          .join('&')
      : '';
    return `${this.#baseUrl}${path}${qs ? `?${qs}` : ''}`;
  }

  /** Raw fetch with auth headers (used by the watch stream). */
  async raw(
    path: string,
    query: Record<string, string | number | undefined>,
    signal: AbortSignal,
  ): Promise<Response> {
    const headers = await this.headers(signal);
    headers.accept = 'text/event-stream';
    return this.#fetch(this.url(path, query), { method: 'GET', headers, signal });
  }

  async #once<T>(spec: RequestSpec<T>): Promise<T> {
    const headers = await this.headers(spec.signal);
    const init: RequestInit = { method: spec.method, headers };
    if (spec.bodyJson !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = spec.bodyJson;
    } else if (spec.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(spec.body);
    }
    if (spec.signal) init.signal = spec.signal;
    let res: Response;
    try {
      res = await this.#fetch(this.url(spec.path, spec.query), init);
    } catch (e) {
      if (spec.signal?.aborted) throw abortError(spec.signal);
      const msg =
        e instanceof Error ? `${e.message} ${String((e as { cause?: unknown }).cause ?? '')}` : String(e);
      throw new ClientError('OVERSYNC_CLIENT_NETWORK', `${spec.method} ${spec.path}: ${msg}`, {
        retryable: RETRYABLE_NET_RE.test(msg) || e instanceof TypeError,
        cause: e,
      });
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      if (spec.signal?.aborted) throw abortError(spec.signal);
      throw new ClientError('OVERSYNC_CLIENT_NETWORK', `${spec.method} ${spec.path}: body read failed`, {
        retryable: true,
        cause: e,
      });
    }
    let body: unknown;
    if (text.length > 0) {
      try {
        body = JSON.parse(text) as unknown;
      } catch {
        body = text;
      }
    }
    if (!res.ok) throw httpError(res.status, body, spec.path);
    if (!spec.schema) return undefined as T;
    const malformed = (issues: unknown[]) =>
      new ClientError('OVERSYNC_CLIENT_PROTOCOL', `${spec.method} ${spec.path}: malformed response`, {
        details: { issues: issues.slice(0, 5) },
      });
    if (spec.rows) return validateInSlices(spec.schema, spec.rows, body, malformed, spec.signal);
    const parsed = spec.schema.safeParse(body);
    if (!parsed.success) throw malformed(parsed.error.issues);
    return parsed.data;
  }

  /** One request, retried on transport failures when `retryOp` is set. */
  async request<T>(spec: RequestSpec<T>): Promise<T> {
    if (!spec.retryOp) return this.#once(spec);
    return this.withRetry(spec.retryOp, () => this.#once(spec), spec.signal);
  }

  /** Runs `fn` under the retry policy: only retryable ClientErrors are retried. */
  async withRetry<T>(op: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const p = this.#retry;
    const attempts = p.enabled ? Math.max(1, p.maxAttempts) : 1;
    let backoff = p.initialBackoffMs;
    let last: unknown;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      signal?.throwIfAborted();
      try {
        return await fn();
      } catch (e) {
        last = e;
        if (!(e instanceof ClientError) || !e.retryable) throw e;
        if (attempt === attempts) break;
        const jitter = 1 + (Math.random() * 2 - 1) * p.jitter;
        this.#logger.debug({ op, attempt, err: e.message }, 'oversync client: retrying');
        await waitBackoff(Math.min(backoff, p.maxBackoffMs) * jitter, signal);
        backoff = Math.min(backoff * 2, p.maxBackoffMs);
      }
    }
    if (attempts === 1) throw last;
    throw new ClientError(
      'OVERSYNC_CLIENT_RETRY_EXHAUSTED',
      `${op}: retries exhausted after ${attempts} attempts`,
      {
        retryable: true,
        details: { operation: op, attempts },
        cause: last,
      },
    );
  }
}
