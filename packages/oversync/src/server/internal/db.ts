/** Quotes an SQL identifier (names come from the registered set, never from a request). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
export function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
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
