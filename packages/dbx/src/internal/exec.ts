import type pg from 'pg';
import { type QueryMessage, queryChannel } from '../channels.js';
import { DbxError, isConnectionError, isDbxError, isRetryable, pgErrorCode } from '../errors.js';
import type { Logger } from '../options.js';
import type { QueryResult } from '../types.js';
import type { Node } from './node.js';
import { cancelledError, errorMessage } from './util.js';

/** A client checked out of a node's pool for one operation. */
export interface Lease {
  readonly node: Node;
  readonly client: pg.PoolClient;
  /** Set when the connection must not go back to the pool (a cancel was sent, or it broke). */
  discard: boolean;
}

/** Errors raised before any byte of the statement reached the server: always safe to retry. */
const notSent = new WeakSet<object>();

export function markNotSent<E>(e: E): E {
  if (typeof e === 'object' && e !== null) notSent.add(e);
  return e;
}

export function wasNotSent(e: unknown): boolean {
  return typeof e === 'object' && e !== null && notSent.has(e);
}

const NOT_QUERYABLE = ['is not queryable', 'Client was closed'];

export interface ExecContext {
  readonly logger: Logger;
  readonly slowQueryThresholdMs: number | null;
  readonly cancelTimeoutMs: number;
  /** Called on a connection error so the node gets re-checked at once. */
  onConnectionError(node: Node, e: unknown): void;
}

/** Wraps a driver error in a DbxError, keeping it as `cause` and its SQLSTATE in details. */
export function wrapError(e: unknown, node: Node, method: string): DbxError {
  if (isDbxError(e)) return e;
  const sqlState = pgErrorCode(e);
  const pgErr = e as Partial<pg.DatabaseError>;
  const details: Record<string, unknown> = { node: node.name, method };
  if (sqlState !== undefined) details.sqlState = sqlState;
  for (const k of ['constraint', 'table', 'column', 'schema', 'severity'] as const) {
    if (typeof pgErr[k] === 'string') details[k] = pgErr[k];
  }
  const connection = isConnectionError(e);
  const err = new DbxError(
    connection ? 'DBX_CONNECTION_FAILED' : 'DBX_QUERY_FAILED',
    connection ? `connection to node ${node.name} failed: ${errorMessage(e)}` : errorMessage(e),
    { cause: e, details, retryable: isRetryable(e) },
  );
  if (wasNotSent(e)) markNotSent(err);
  return err;
}

export function toResult<R>(res: pg.QueryResult | pg.QueryResult[]): QueryResult<R> {
  // A multi-statement simple query answers with one result per statement: report the last one.
  const last = Array.isArray(res) ? res[res.length - 1] : res;
  if (!last) return { rows: [], rowCount: 0, fields: [] };
  return {
    rows: last.rows as R[],
    rowCount: last.rowCount ?? 0,
    fields: last.fields.map((f) => ({ name: f.name, dataTypeID: f.dataTypeID })),
  };
}

export function totalRowCount(res: pg.QueryResult | pg.QueryResult[]): number {
  if (!Array.isArray(res)) return res.rowCount ?? 0;
  let n = 0;
  for (const r of res) n += r.rowCount ?? 0;
  return n;
}

/** Bookkeeping of a failed statement (shared by both execution paths); returns the error to throw. */
function statementFailed(
  ctx: ExecContext,
  lease: Lease,
  method: string,
  sql: string,
  started: number,
  e: unknown,
): DbxError {
  const { node } = lease;
  node.errors++;
  if (typeof e === 'object' && e !== null) {
    const msg = (e as { message?: unknown }).message;
    if (typeof msg === 'string' && NOT_QUERYABLE.some((m) => msg.includes(m))) markNotSent(e);
  }
  if (isConnectionError(e)) {
    lease.discard = true;
    ctx.onConnectionError(node, e);
  }
  if (queryChannel.hasSubscribers) {
    const m: QueryMessage = {
      method,
      node: node.name,
      sql,
      durationMs: performance.now() - started,
      rowCount: null,
      error: errorMessage(e),
    };
    const state = pgErrorCode(e);
    if (state !== undefined) m.sqlState = state;
    queryChannel.publish(m);
  }
  return wrapError(e, node, method);
}

/** Bookkeeping of a successful statement: the slow-query log and `x:dbx:query`. */
export function statementDone(
  ctx: ExecContext,
  node: Node,
  method: string,
  sql: string,
  started: number,
  rowCount: () => number,
): void {
  const durationMs = performance.now() - started;
  const slow = ctx.slowQueryThresholdMs;
  if (slow !== null && durationMs >= slow) {
    ctx.logger.warn(
      {
        node: node.name,
        method,
        durationMs: Math.round(durationMs),
        sql: sql.length > 500 ? `${sql.slice(0, 500)}…` : sql,
      },
      'dbx: slow query',
    );
  }
  if (queryChannel.hasSubscribers) {
    queryChannel.publish({
      method,
      node: node.name,
      sql,
      durationMs,
      rowCount: rowCount(),
    } satisfies QueryMessage);
  }
}

/**
 * One statement to run: `method` names it in the slow-query log and on `x:dbx:query`, `name` makes
 * it a named prepared statement (StatementOptions.name).
 */
export interface Statement {
  readonly method: string;
  readonly sql: string;
  readonly params?: readonly unknown[] | undefined;
  readonly name?: string | undefined;
}

function queryConfig({ sql, params, name }: Statement): string | pg.QueryConfig {
  if (name !== undefined) return { name, text: sql, values: (params ?? []) as unknown[] };
  return params === undefined || params.length === 0 ? sql : { text: sql, values: params as unknown[] };
}

export type Results = pg.QueryResult | pg.QueryResult[];

/** Destroys the socket under a pg client: its pending query rejects with a connection error. */
export function destroyConnection(client: pg.ClientBase): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream;
  stream?.destroy();
}

/**
 * Runs one statement on a leased client: cancellation through `pg_cancel_backend` on abort, the slow
 * query log, the `x:dbx:query` channel, and error wrapping.
 */
export async function runStatement(
  ctx: ExecContext,
  lease: Lease,
  statement: Statement,
  signal: AbortSignal | undefined,
): Promise<Results> {
  const { method, sql } = statement;
  const { node, client } = lease;
  if (signal?.aborted) throw cancelledError(signal);
  const started = performance.now();
  node.queries++;
  let cancelling: Promise<void> | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    lease.discard = true;
    const pid = (client as unknown as { processID: number | null }).processID;
    if (pid !== null) {
      cancelling = node.cancelBackend(pid, ctx.cancelTimeoutMs).catch((e: unknown) => {
        ctx.logger.warn({ node: node.name, err: errorMessage(e) }, 'dbx: could not cancel a statement');
      });
    }
    // A server that does not answer (network black hole) never ends the statement: drop the
    // connection so the caller's promise settles anyway.
    killTimer = setTimeout(() => destroyConnection(client), ctx.cancelTimeoutMs);
    killTimer.unref();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  let res: Results;
  try {
    res = (await client.query(queryConfig(statement))) as Results;
  } catch (e) {
    const err = statementFailed(ctx, lease, method, sql, started, e);
    if (signal?.aborted) throw cancelledError(signal, err);
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (killTimer) clearTimeout(killTimer);
    if (cancelling) await cancelling;
  }
  statementDone(ctx, node, method, sql, started, () => totalRowCount(res));
  return res;
}

export interface OnceHooks {
  /** Sees every client checked out (the cluster attaches its error listener). */
  guard(node: Node, client: pg.PoolClient): void;
  /** Turns a failed checkout into the error to report (never sent: safe to retry). */
  connectFailed(node: Node, e: unknown): unknown;
  isBroken(client: pg.PoolClient): boolean;
}

/**
 * The hot path: check a client out of `node`'s pool, run one statement without a signal, release.
 * Callbacks only and a single promise, so a point query costs about what `pool.query` costs. The
 * result goes through `map`; a failure goes to `onFail`, whose promise (a retry, or a rejection)
 * settles this one.
 */
export function runOnce<T>(
  ctx: ExecContext,
  node: Node,
  statement: Statement,
  hooks: OnceHooks,
  map: (res: Results) => T,
  onFail: (e: unknown) => Promise<T>,
): Promise<T> {
  const { method, sql } = statement;
  return new Promise<T>((resolve, reject) => {
    node.pool.connect((err, client, done) => {
      if (err || !client) {
        resolve(onFail(hooks.connectFailed(node, err)));
        return;
      }
      hooks.guard(node, client);
      const lease: Lease = { node, client, discard: false };
      const started = performance.now();
      node.queries++;
      client.query(queryConfig(statement), (e: Error | null, res: Results) => {
        if (e) {
          const wrapped = statementFailed(ctx, lease, method, sql, started, e);
          done(lease.discard || hooks.isBroken(client) ? true : undefined);
          resolve(onFail(wrapped));
          return;
        }
        done(hooks.isBroken(client) ? true : undefined);
        try {
          statementDone(ctx, node, method, sql, started, () => totalRowCount(res));
          resolve(map(res));
        } catch (x) {
          reject(x);
        }
      });
    });
  });
}

/** The first row of a result, or undefined (the `...Row` methods). */
export async function firstRow<R>(result: Promise<QueryResult<R>>): Promise<R | undefined> {
  return (await result).rows[0];
}
