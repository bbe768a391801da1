import { CodedError, type CodedErrorOptions } from '@x/core';

/** `retryable`, `details` and `cause`, as for every `@x/core` CodedError. */
export type DbxErrorOptions = CodedErrorOptions;

/**
 * The one error class of `@x/dbx`. Check errors by `code`, never by `instanceof` (two copies of the
 * package may be loaded). The driver error, when there is one, is kept as `cause`; its SQLSTATE is in
 * `details.sqlState`. Messages never contain parameter values.
 */
export type DbxErrorCode =
  | 'DBX_INVALID_OPTIONS'
  | 'DBX_CLUSTER_CLOSED'
  | 'DBX_NO_HEALTHY_NODE'
  | 'DBX_RETRY_EXHAUSTED'
  | 'DBX_QUERY_CANCELLED'
  | 'DBX_QUERY_FAILED'
  | 'DBX_CONNECTION_FAILED'
  | 'DBX_TX_CLOSED'
  | 'DBX_INVALID_TOKEN'
  | 'DBX_NO_ROWS'
  | 'DBX_ROW_INVALID';

/** Every {@link DbxErrorCode}, for exhaustive handling or validation of a serialized error's code. */
export const DBX_ERROR_CODES: readonly DbxErrorCode[] = Object.freeze([
  'DBX_INVALID_OPTIONS',
  'DBX_CLUSTER_CLOSED',
  'DBX_NO_HEALTHY_NODE',
  'DBX_RETRY_EXHAUSTED',
  'DBX_QUERY_CANCELLED',
  'DBX_QUERY_FAILED',
  'DBX_CONNECTION_FAILED',
  'DBX_TX_CLOSED',
  'DBX_INVALID_TOKEN',
  'DBX_NO_ROWS',
  'DBX_ROW_INVALID',
]);

/**
 * The error every `@x/dbx` call rejects with. code, message, retryable, details and cause come from
 * `@x/core`'s CodedError; `sqlState` is the SQLSTATE of the server error behind it, if any.
 *
 * @example
 * ```ts
 * import { createCluster, DbxError } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * try {
 *   await db.query('select * from no_such_table');
 * } catch (e) {
 *   if (!(e instanceof DbxError)) throw e;
 *   console.log(e.code, e.sqlState, e.retryable); // DBX_QUERY_FAILED 42P01 false
 *   console.log(e.details); // { node: 'primary', method: 'query', sqlState: '42P01', severity: 'ERROR' }
 * }
 * await db.close();
 * ```
 */
export class DbxError extends CodedError<DbxErrorCode> {
  /** Always `'DbxError'`: what {@link isDbxError} checks, across copies of the package. */
  override readonly name = 'DbxError';

  /** SQLSTATE of the server error behind this one, if any. */
  get sqlState(): string | undefined {
    return pgErrorCode(this);
  }
}

/**
 * True for a {@link DbxError} from any copy of `@x/dbx` (checked by `name` and `code`, not by
 * `instanceof`), which narrows `e` so its `code` can be switched on.
 *
 * @example
 * ```ts
 * import { collectOne, createCluster, isDbxError } from '@x/dbx';
 * import { z } from 'zod';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists users (id int primary key, email text not null)');
 * const User = z.object({ id: z.number(), email: z.string() });
 *
 * async function findUser(id: number): Promise<z.infer<typeof User> | null> {
 *   try {
 *     return await db.readQuery('select id, email from users where id = $1', [id]).then(collectOne(User));
 *   } catch (e) {
 *     if (isDbxError(e) && e.code === 'DBX_NO_ROWS') return null;
 *     throw e;
 *   }
 * }
 * console.log(await findUser(-1)); // null
 * await db.close();
 * ```
 */
export function isDbxError(e: unknown): e is DbxError {
  return (
    typeof e === 'object' &&
    e !== null &&
    (e as { name?: unknown }).name === 'DbxError' &&
    typeof (e as { code?: unknown }).code === 'string'
  );
}

/** Walks `e` and its `cause` chain (bounded), yielding each error-like object. */
function* chain(e: unknown): Generator<Record<string, unknown>> {
  let cur: unknown = e;
  for (let i = 0; i < 8 && typeof cur === 'object' && cur !== null; i++) {
    yield cur as Record<string, unknown>;
    cur = (cur as { cause?: unknown }).cause;
  }
}

const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * The SQLSTATE (e.g. `23505`) of a server error, found on `e` or anywhere in its `cause` chain;
 * undefined for errors that did not come from the server (a refused connection, say).
 *
 * @example
 * ```ts
 * import { createCluster, pgErrorCode } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists accounts (id int primary key, balance int check (balance >= 0))');
 * try {
 *   await db.exec('insert into accounts values ($1, $2)', [1, -5]);
 * } catch (e) {
 *   if (pgErrorCode(e) !== '23514') throw e; // check_violation
 *   console.log('balance must not be negative');
 * }
 * await db.close();
 * ```
 */
export function pgErrorCode(e: unknown): string | undefined {
  for (const err of chain(e)) {
    const details = err.details as { sqlState?: unknown } | undefined;
    if (details && typeof details.sqlState === 'string') return details.sqlState;
    // pg's DatabaseError carries `severity` next to `code`; node's system errors have codes like ECONNRESET.
    if (typeof err.code === 'string' && SQLSTATE.test(err.code) && 'severity' in err) return err.code;
  }
  return undefined;
}

const NODE_CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
]);

/** Messages node-postgres uses when a connection dies or cannot be had. */
const PG_CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'Connection ended',
  'terminating connection',
];

/**
 * True for errors meaning the connection failed or the server is going away / not accepting
 * connections: node socket errors, SQLSTATE class 08, 57P01-57P03, 53300. Looks through the `cause`
 * chain, so it holds for a DBX_RETRY_EXHAUSTED whose last attempt could not connect.
 *
 * @example
 * ```ts
 * import { createCluster, isConnectionError } from '@x/dbx';
 *
 * const db = createCluster({ primary: 'postgres://app@127.0.0.1:1/app' }); // nothing listens on port 1
 * try {
 *   await db.query('select 1');
 * } catch (e) {
 *   console.log(isConnectionError(e)); // true: answer 503 rather than 500
 * }
 * await db.close();
 * ```
 */
export function isConnectionError(e: unknown): boolean {
  for (const err of chain(e)) {
    if (isDbxError(err) && (err.code === 'DBX_CONNECTION_FAILED' || err.code === 'DBX_NO_HEALTHY_NODE')) {
      return true;
    }
    const code = err.code;
    if (typeof code === 'string' && NODE_CONNECTION_CODES.has(code)) return true;
  }
  const state = pgErrorCode(e);
  if (state !== undefined) {
    return (
      state.startsWith('08') ||
      state === '57P01' ||
      state === '57P02' ||
      state === '57P03' ||
      state === '53300'
    );
  }
  for (const err of chain(e)) {
    const msg = err.message;
    if (typeof msg === 'string' && PG_CONNECTION_MESSAGES.some((m) => msg.includes(m))) return true;
  }
  return false;
}

/**
 * Serialization failure (40001) or deadlock (40P01): the whole transaction may be retried. `runTx`
 * does that by itself; a transaction driven by hand with `begin()` checks it.
 *
 * @example
 * ```ts
 * import { createCluster, isSerializationFailure } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists counters (id int primary key, n int not null)');
 * await db.exec('insert into counters values (1, 0) on conflict do nothing');
 * for (let attempt = 1; ; attempt++) {
 *   await using tx = await db.begin({ isolation: 'serializable' }); // rolled back unless committed
 *   try {
 *     await tx.exec('update counters set n = n + 1 where id = 1');
 *     await tx.commit();
 *     break;
 *   } catch (e) {
 *     if (!isSerializationFailure(e) || attempt === 5) throw e; // another transaction won: try again
 *   }
 * }
 * await db.close();
 * ```
 */
export function isSerializationFailure(e: unknown): boolean {
  const state = pgErrorCode(e);
  return state === '40001' || state === '40P01';
}

/**
 * True when retrying could succeed: connection failures, serialization failures and deadlocks,
 * "read-only transaction" (25006: a standby answered, re-route), or a DbxError flagged retryable.
 * Whether a retry is SAFE also depends on whether the statement may have run; dbx decides that itself.
 * False for DBX_RETRY_EXHAUSTED and DBX_QUERY_CANCELLED: dbx has retried already, or the caller gave up.
 *
 * @example
 * ```ts
 * import { createCluster, isRetryable } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists jobs (id int primary key, done boolean not null default false)');
 * // A queue consumer: put the job back for later only when trying again could help.
 * async function handle(job: { id: number }): Promise<'done' | 'retry' | 'dead'> {
 *   try {
 *     await db.exec('update jobs set done = true where id = $1', [job.id]);
 *     return 'done';
 *   } catch (e) {
 *     return isRetryable(e) ? 'retry' : 'dead';
 *   }
 * }
 * console.log(await handle({ id: 1 })); // done
 * console.log(await handle({ id: Number.NaN })); // dead: 22P02, 'NaN' is no integer however often it is sent
 * await db.close();
 * ```
 */
export function isRetryable(e: unknown): boolean {
  for (const err of chain(e)) {
    if (isDbxError(err)) {
      if (err.code === 'DBX_RETRY_EXHAUSTED' || err.code === 'DBX_QUERY_CANCELLED') return false;
      if (err.retryable) return true;
    }
  }
  if (isConnectionError(e)) return true;
  const state = pgErrorCode(e);
  return state === '40001' || state === '40P01' || state === '25006';
}

/**
 * Integrity constraint violations: SQLSTATE class 23 (unique, foreign key, not null, check, exclusion).
 *
 * @example
 * ```ts
 * import { createCluster, isConstraintViolation } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists users (id int primary key, email text not null unique)');
 * async function signUp(id: number, email: string): Promise<{ status: 201 | 409 }> {
 *   try {
 *     await db.exec('insert into users (id, email) values ($1, $2)', [id, email]);
 *     return { status: 201 };
 *   } catch (e) {
 *     if (isConstraintViolation(e)) return { status: 409 };
 *     throw e;
 *   }
 * }
 * await signUp(1, 'a@example.com');
 * console.log(await signUp(1, 'a@example.com')); // { status: 409 }
 * await db.close();
 * ```
 */
export function isConstraintViolation(e: unknown): boolean {
  const state = pgErrorCode(e);
  return state?.startsWith('23') === true;
}

/**
 * The constraint name of a constraint violation, if the server reported one.
 *
 * @example
 * ```ts
 * import { constraintName, createCluster } from '@x/dbx';
 *
 * const db = createCluster({ primary: process.env.DATABASE_URL! });
 * await db.exec('create table if not exists members (id int primary key, email text not null unique)');
 * await db.exec('insert into members values (1, $1) on conflict do nothing', ['a@example.com']);
 * try {
 *   await db.exec('insert into members values (2, $1)', ['a@example.com']);
 * } catch (e) {
 *   console.log(constraintName(e)); // members_email_key: the email is taken (members_pkey: the id)
 * }
 * await db.close();
 * ```
 */
export function constraintName(e: unknown): string | undefined {
  for (const err of chain(e)) {
    if (typeof err.constraint === 'string') return err.constraint;
  }
  return undefined;
}
