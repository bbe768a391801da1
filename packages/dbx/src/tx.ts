import { AsyncLocalStorage } from 'node:async_hooks';
import { DbxError, isDbxError, isRetryable, pgErrorCode } from './errors.js';
import {
  checkCallOptions,
  checkEnumOption,
  ISOLATION_LEVELS,
  invalidCallOption,
  statementOptionsError,
  TX_OPTION_KEYS,
} from './internal/call-options.js';
import {
  type ExecContext,
  firstRow,
  type Lease,
  markNotSent,
  type Results,
  runStatement,
  type Statement,
  toResult,
  totalRowCount,
} from './internal/exec.js';
import { anySignal } from './internal/util.js';
import type { Querier, QueryResult, StatementOptions, Tx, TxOptions } from './types.js';

/**
 * A failed BEGIN (or the statement that carried it), marked safe to retry when it may be: nothing
 * of the transaction can have committed, and runTx retries its whole callback then.
 */
export function beginFailed(e: unknown): unknown {
  // Only a failure of the connection: another error the server answered (a SQLSTATE) is the
  // statement's, retried or not by runTx's own rules.
  if (
    isDbxError(e) &&
    isRetryable(e) &&
    (e.code === 'DBX_CONNECTION_FAILED' || (e.code !== 'DBX_QUERY_CANCELLED' && pgErrorCode(e) === undefined))
  )
    return markNotSent(e);
  return e;
}

/** The transaction of the enclosing runTx, for `currentQuerier()`. */
export const txStorage = new AsyncLocalStorage<TxImpl>();

/**
 * The Tx of the enclosing `runTx` (any cluster), or undefined outside one. Service code writes
 * `const q = currentQuerier() ?? cluster` and so joins the caller's transaction when there is one.
 *
 * @example
 * ```ts
 * import { createCluster, currentQuerier } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists audit_log (what text not null)');
 *
 * // Joins the caller's transaction when there is one, else runs on its own.
 * async function audit(what: string): Promise<void> {
 *   await (currentQuerier() ?? db).exec('insert into audit_log (what) values ($1)', [what]);
 * }
 *
 * await db
 *   .runTx(async (tx) => {
 *     await audit('signup'); // in the transaction: rolled back with it
 *     await tx.exec('select 1 / 0'); // fails
 *   })
 *   .catch(() => {});
 * await audit('standalone'); // committed on its own
 * console.log(await db.queryRow("select count(*)::int as n from audit_log where what = 'signup'")); // { n: 0 }
 * await db.close();
 * ```
 */
export function currentQuerier(): Querier | undefined {
  const tx = txStorage.getStore();
  return tx && !tx.closed ? tx : undefined;
}

export function beginStatement(opts: TxOptions | undefined): string {
  let sql = 'begin';
  if (opts?.isolation) sql += ` isolation level ${opts.isolation}`;
  if (opts?.readOnly !== undefined) sql += opts.readOnly ? ' read only' : ' read write';
  if (opts?.deferrable !== undefined) sql += opts.deferrable ? ' deferrable' : ' not deferrable';
  return sql;
}

/** Known keys only, `isolation` one of the levels, booleans boolean, `maxAttempts` a positive integer. */
export function validateTxOptions(opts: TxOptions | undefined): void {
  if (opts === undefined) return;
  const what = 'transaction options';
  checkCallOptions(what, opts, TX_OPTION_KEYS);
  checkEnumOption(what, 'isolation', opts.isolation, ISOLATION_LEVELS);
  for (const key of ['readOnly', 'deferrable'] as const) {
    if (opts[key] !== undefined && typeof opts[key] !== 'boolean') {
      throw invalidCallOption(what, key, 'expected a boolean');
    }
  }
  if (opts.maxAttempts !== undefined && !(Number.isInteger(opts.maxAttempts) && opts.maxAttempts >= 1)) {
    throw invalidCallOption(what, 'maxAttempts', 'expected a positive integer');
  }
}

/** A transaction on one leased primary connection. Internal: users see the `Tx` interface. */
export class TxImpl implements Tx {
  readonly owner: object;
  readonly lease: Lease;
  readonly #ctx: ExecContext;
  readonly #signal: AbortSignal | undefined;
  #closed = false;
  #savepoints = 0;
  /** The BEGIN not sent yet (runTx): it goes with the transaction's first statement. */
  #begin: string | undefined;

  constructor(
    owner: object,
    ctx: ExecContext,
    lease: Lease,
    signal: AbortSignal | undefined,
    /** Defer this BEGIN to the first statement (see #run); undefined when it was sent already. */
    begin?: string,
  ) {
    this.owner = owner;
    this.#ctx = ctx;
    this.lease = lease;
    this.#signal = signal;
    this.#begin = begin;
  }

  /**
   * Runs a statement, sending the deferred BEGIN first. A statement without parameters (or a
   * name) carries it in the same simple query, `begin …; <sql>`, which saves the transaction a
   * round trip; otherwise BEGIN goes alone first. A failure that may be retried (a connection
   * error) of the statement that carried BEGIN is marked safe to retry, as a failed BEGIN always
   * was: nothing of the transaction can have committed.
   */
  async #run(statement: Statement, signal: AbortSignal | undefined): Promise<Results> {
    const begin = this.#begin;
    if (begin === undefined) return runStatement(this.#ctx, this.lease, statement, signal);
    this.#begin = undefined;
    const { method, sql, params, name } = statement;
    if ((params === undefined || params.length === 0) && name === undefined) {
      let res: Results;
      try {
        res = await runStatement(this.#ctx, this.lease, { method, sql: `${begin};\n${sql}` }, signal);
      } catch (e) {
        throw beginFailed(e);
      }
      // BEGIN's own result first; the caller sees what its statement(s) answered.
      if (!Array.isArray(res)) return res;
      return res.length === 2 ? res[1]! : res.slice(1);
    }
    try {
      await runStatement(this.#ctx, this.lease, { method: 'tx', sql: begin }, signal);
    } catch (e) {
      throw beginFailed(e);
    }
    return runStatement(this.#ctx, this.lease, statement, signal);
  }

  /** Sends the deferred BEGIN now (before the connection is used directly: a cursor). */
  async begun(signal?: AbortSignal): Promise<void> {
    const begin = this.#begin;
    if (begin === undefined) return;
    this.#begin = undefined;
    try {
      await runStatement(
        this.#ctx,
        this.lease,
        { method: 'tx', sql: begin },
        anySignal(signal, this.#signal),
      );
    } catch (e) {
      throw beginFailed(e);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  markClosed(): void {
    this.#closed = true;
  }

  #check(): void {
    if (this.#closed) {
      throw new DbxError('DBX_TX_CLOSED', 'the transaction is already committed or rolled back');
    }
  }

  /**
   * Runs a statement of the transaction itself (begin/commit/savepoint...). COMMIT or ROLLBACK of
   * a transaction whose BEGIN was never sent (no statement ran) sends nothing.
   */
  control(sql: string, signal?: AbortSignal): Promise<unknown> {
    if (this.#begin !== undefined && (sql === 'commit' || sql === 'rollback')) {
      this.#begin = undefined;
      return Promise.resolve(undefined);
    }
    return this.#run({ method: 'tx', sql }, anySignal(signal, this.#signal));
  }

  async query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<QueryResult<R>> {
    this.#check();
    const bad = statementOptionsError('query options', opts);
    if (bad !== null) throw bad;
    return toResult<R>(
      await this.#run(
        { method: 'tx.query', sql, params, name: opts?.name },
        anySignal(opts?.signal, this.#signal),
      ),
    );
  }

  queryRow<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<R | undefined> {
    return firstRow(this.query<R>(sql, params, opts));
  }

  async exec(
    sql: string,
    params?: readonly unknown[],
    opts?: StatementOptions,
  ): Promise<{ rowCount: number }> {
    this.#check();
    const bad = statementOptionsError('exec options', opts);
    if (bad !== null) throw bad;
    const res = await this.#run(
      { method: 'tx.exec', sql, params, name: opts?.name },
      anySignal(opts?.signal, this.#signal),
    );
    return { rowCount: totalRowCount(res) };
  }

  /** Nested transaction: a savepoint, released on success, rolled back to on throw. */
  async runTx<T>(fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T> {
    this.#check();
    validateTxOptions(opts);
    const name = `dbx_sp_${++this.#savepoints}`;
    await this.control(`savepoint ${name}`, opts?.signal);
    let result: T;
    try {
      result = await txStorage.run(this, () => fn(this));
    } catch (e) {
      if (!this.#closed) {
        try {
          await this.control(`rollback to savepoint ${name}`);
          await this.control(`release savepoint ${name}`);
        } catch {
          // The outer transaction is broken (connection lost, say); the outer runTx rolls it back.
        }
      }
      throw e;
    }
    this.#check();
    await this.control(`release savepoint ${name}`, opts?.signal);
    return result;
  }
}
