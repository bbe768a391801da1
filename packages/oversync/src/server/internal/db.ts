/**
 * The structural subset of an @x/dbx `Cluster` the sync service uses. Any object with these
 * methods works (kysely's "take an interface, not the driver's class").
 */
export interface SyncQueryResult<R> {
  rows: R[];
  rowCount: number | null;
}
export interface SyncQuerier {
  query<R = Record<string, unknown>>(
    sql: string,
    params?: readonly unknown[],
    opts?: { signal?: AbortSignal },
  ): Promise<SyncQueryResult<R>>;
}
export interface SyncTxOptions {
  isolation?: 'read committed' | 'repeatable read' | 'serializable';
  readOnly?: boolean;
  signal?: AbortSignal;
  maxAttempts?: number;
}
/** A dedicated connection (LISTEN for the watch endpoint): the subset of a `pg.PoolClient` used. */
export interface SyncListenClient {
  query(sql: string): Promise<unknown>;
  on(
    event: 'notification',
    listener: (msg: { channel: string; payload?: string | undefined }) => void,
  ): unknown;
  on(event: 'error' | 'end', listener: (err?: Error) => void): unknown;
  removeAllListeners(event?: string): unknown;
  release(err?: Error | boolean): void;
}
export interface SyncDatabase extends SyncQuerier {
  runTx<T>(fn: (tx: SyncQuerier) => Promise<T>, opts?: SyncTxOptions): Promise<T>;
  /** A dedicated primary connection (an @x/dbx cluster's `connect()`, a pg `PoolClient`). */
  connect?(opts?: { signal?: AbortSignal }): Promise<unknown>;
}

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
