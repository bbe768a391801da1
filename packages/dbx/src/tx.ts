import { AsyncLocalStorage } from 'node:async_hooks';
import { DbxError } from './errors.js';
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
  runStatement,
  toResult,
  totalRowCount,
} from './internal/exec.js';
import { anySignal } from './internal/util.js';
import type { Querier, QueryResult, StatementOptions, Tx, TxOptions } from './types.js';

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

  constructor(owner: object, ctx: ExecContext, lease: Lease, signal: AbortSignal | undefined) {
    this.owner = owner;
    this.#ctx = ctx;
    this.lease = lease;
    this.#signal = signal;
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

  /** Runs a statement of the transaction itself (begin/commit/savepoint...). */
  control(sql: string, signal?: AbortSignal): Promise<unknown> {
    return runStatement(this.#ctx, this.lease, 'tx', sql, undefined, anySignal(signal, this.#signal));
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
      await runStatement(
        this.#ctx,
        this.lease,
        'tx.query',
        sql,
        params,
        anySignal(opts?.signal, this.#signal),
        opts?.name,
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
    const res = await runStatement(
      this.#ctx,
      this.lease,
      'tx.exec',
      sql,
      params,
      anySignal(opts?.signal, this.#signal),
      opts?.name,
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
