import { createHash } from 'node:crypto';
/** Quotes an SQL identifier (names come from the registered set, never from a request). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
export function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

/**
 * `CREATE OR REPLACE FUNCTION sync.<name>(<args>) RETURNS TABLE (<returns>)` running `sql` (its
 * `$n` the arguments) as PL/pgSQL's `RETURN QUERY`: PostgreSQL plans a function's statement once
 * per connection and reuses the plan, where the same statement sent as text is planned on every
 * call (for the small, hot statements of a push, planning cost more than running them).
 * Unqualified names in `sql` are its columns (`#variable_conflict use_column`), never the result
 * columns; `sql` must not contain `$fn$`. Created by every bootstrap.
 */
export function cachedPlanFunctionSql(name: string, args: string, returns: string, sql: string): string {
  return `
CREATE OR REPLACE FUNCTION sync.${name}(${args}) RETURNS TABLE (${returns})
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY ${sql};
END
$fn$`;
}

const preparedNames = new Map<string, string>();
/** At most this many statement texts get a prepared-statement name (each holds a plan per connection). */
export const MAX_PREPARED_STATEMENTS = 256;

/**
 * The query options under which the hot statement `sql` runs as a named prepared statement
 * (SyncQuerier's `name`), so PostgreSQL plans it once per connection: for the statements built at run time (a
 * push's business INSERT, one text per table and column set), which cannot be a cached-plan
 * function. Derived from the text (one name, one text, as node-postgres requires); undefined once
 * MAX_PREPARED_STATEMENTS texts have a name (the statement is then planned per call, as before).
 */
export function prepared(sql: string): { name: string } | undefined {
  let name = preparedNames.get(sql);
  if (name === undefined) {
    if (preparedNames.size >= MAX_PREPARED_STATEMENTS) return undefined;
    name = `oversync_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`;
    preparedNames.set(sql, name);
  }
  return { name };
}

/** The server fields of a PostgreSQL error (node-postgres `DatabaseError`) found in a cause chain. */
export interface SqlErrorFields {
  readonly code: string;
  readonly constraint: string | undefined;
  readonly column: string | undefined;
}

/** The PostgreSQL error behind `e` (an @x/dbx error keeps the driver's error as `cause`). */
export function sqlErrorOf(e: unknown): SqlErrorFields | undefined {
  let cur: unknown = e;
  let state: string | undefined;
  for (let i = 0; i < 8 && typeof cur === 'object' && cur !== null; i++) {
    const err = cur as Record<string, unknown>;
    if (typeof err['code'] === 'string' && 'severity' in err && /^[0-9A-Z]{5}$/.test(err['code'])) {
      return {
        code: err['code'],
        constraint: typeof err['constraint'] === 'string' ? err['constraint'] : undefined,
        column: typeof err['column'] === 'string' ? err['column'] : undefined,
      };
    }
    const details = err['details'] as { sqlState?: unknown } | undefined;
    if (state === undefined && typeof details?.sqlState === 'string') state = details.sqlState;
    cur = err['cause'];
  }
  return state === undefined ? undefined : { code: state, constraint: undefined, column: undefined };
}
