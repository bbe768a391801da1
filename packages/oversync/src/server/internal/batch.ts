/**
 * Several statements in one round trip (issue #19 point 3: a 10-row push spent most of its server
 * CPU writing statements to the socket, one write and one wake-up of PostgreSQL per statement).
 *
 * Statements whose answers are not needed (`SET LOCAL …`, a lock, an upsert) are queued with
 * `later()` and sent ahead of the next `query()` as one simple-protocol query string, their
 * parameters written as literals. PostgreSQL runs such a string statement by statement, each with
 * its own snapshot (read committed) and its own statement timeout (PostgreSQL 13+), in the
 * enclosing transaction or, outside one, in one implicit transaction: the same effects as sending
 * them one by one, minus the round trips. The answer is the last statement's.
 */
import type { SyncQuerier, SyncQueryResult } from '../database.js';

export interface Statement {
  readonly sql: string;
  readonly params?: readonly unknown[] | undefined;
}

/** `'…'` with every character taken literally whatever `standard_conforming_strings` says. */
function stringLiteral(s: string): string {
  return `E'${s.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** An array parameter's text (what node-postgres sends for a flat array), or undefined. */
function arrayText(a: readonly unknown[]): string | undefined {
  const parts: string[] = [];
  for (const v of a) {
    if (v === null || v === undefined) parts.push('NULL');
    else if (typeof v === 'string') parts.push(`"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`);
    else if (typeof v === 'number' && Number.isFinite(v)) parts.push(String(v));
    else if (typeof v === 'bigint' || typeof v === 'boolean') parts.push(String(v));
    else return undefined;
  }
  return `{${parts.join(',')}}`;
}

/**
 * A parameter as an untyped literal, which PostgreSQL types from its context exactly as it types a
 * text parameter (`'5'`, not `5`); undefined when the value has no such form here (then the batch
 * is sent statement by statement instead).
 */
function literalOf(v: unknown): string | undefined {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return stringLiteral(v);
  if (typeof v === 'number') return Number.isFinite(v) ? `'${v}'` : undefined;
  if (typeof v === 'bigint' || typeof v === 'boolean') return `'${v}'`;
  if (Buffer.isBuffer(v)) return `'\\x${v.toString('hex')}'`;
  if (Array.isArray(v)) {
    const t = arrayText(v);
    return t === undefined ? undefined : stringLiteral(t);
  }
  return undefined;
}

/**
 * `sql` with `$n` replaced by the literal of `params[n-1]`. Only for the statements of this
 * package, none of which has `$n` inside a quoted literal or a dollar-quoted body.
 */
export function inlineParams(sql: string, params: readonly unknown[] | undefined): string | undefined {
  if (!params || params.length === 0) return sql;
  const lits: string[] = [];
  for (const p of params) {
    const l = literalOf(p);
    if (l === undefined) return undefined;
    lits.push(l);
  }
  let bad = false;
  const out = sql.replace(/\$(\d+)/g, (_, n: string) => {
    const l = lits[Number(n) - 1];
    if (l === undefined) bad = true;
    return l ?? '';
  });
  return bad ? undefined : out;
}

/** The last statement's answer of a multi-statement query (node-postgres answers with an array). */
function lastResult<R>(res: SyncQueryResult<R> | SyncQueryResult<R>[]): SyncQueryResult<R> {
  if (!Array.isArray(res)) return res;
  return res[res.length - 1] ?? { rows: [], rowCount: 0 };
}

/** Runs `stmts` in one round trip when every parameter can be inlined, else one by one. */
export async function runStatements<R>(
  q: SyncQuerier,
  stmts: readonly Statement[],
  opts?: { signal?: AbortSignal },
): Promise<SyncQueryResult<R>> {
  if (stmts.length === 1) return q.query<R>(stmts[0]!.sql, stmts[0]!.params, opts);
  const texts: string[] = [];
  for (const s of stmts) {
    const t = inlineParams(s.sql, s.params);
    if (t === undefined) {
      let last: SyncQueryResult<R> = { rows: [], rowCount: 0 };
      for (const x of stmts) last = await q.query<R>(x.sql, x.params, opts);
      return last;
    }
    texts.push(t);
  }
  return lastResult<R>(await q.query<R>(texts.join(';\n'), undefined, opts));
}

/** A querier that sends queued statements (`later`) ahead of the next `query`, in its round trip. */
export class StatementBatch implements SyncQuerier {
  readonly #q: SyncQuerier;
  #queued: Statement[] = [];

  constructor(q: SyncQuerier) {
    this.#q = q;
  }

  /** Queues a statement whose answer is not needed; it runs, in order, before the next query. */
  later(sql: string, params?: readonly unknown[]): void {
    this.#queued.push({ sql, params });
  }

  /** `opts.name` (a prepared statement) applies when nothing is queued (else the batch is text). */
  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: { signal?: AbortSignal; name?: string },
  ): Promise<SyncQueryResult<R>> {
    if (this.#queued.length === 0) return this.#q.query<R>(sql, params, opts);
    const stmts = [...this.#queued, { sql, params }];
    this.#queued = [];
    return runStatements<R>(this.#q, stmts, opts?.signal ? { signal: opts.signal } : undefined);
  }

  /** Runs what is still queued. */
  async flush(): Promise<void> {
    if (this.#queued.length === 0) return;
    const stmts = this.#queued;
    this.#queued = [];
    await runStatements(this.#q, stmts);
  }
}

/**
 * The first statements of a request sent as one implicit transaction (`runStatements`): read
 * committed whatever the database's default (a lock must come before its rows are re-read), and
 * the request's statement and lock timeouts.
 */
export function oneTripPreamble(limits: {
  readonly requestStatementTimeoutMs: number;
  readonly uploadLockTimeoutMs: number;
}): Statement[] {
  const stmts: Statement[] = [{ sql: 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED' }];
  if (limits.requestStatementTimeoutMs > 0)
    stmts.push({ sql: `SET LOCAL statement_timeout = ${Math.ceil(limits.requestStatementTimeoutMs)}` });
  if (limits.uploadLockTimeoutMs > 0)
    stmts.push({ sql: `SET LOCAL lock_timeout = '${Math.ceil(limits.uploadLockTimeoutMs)}ms'` });
  return stmts;
}
