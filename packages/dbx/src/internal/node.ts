import pg from 'pg';
import { DbxError } from '../errors.js';
import type { NodeConfig, ResolvedClusterOptions } from '../options.js';
import type { NodeRole, NodeStats } from '../types.js';
import { formatLsn, parseLsn } from './lsn.js';
import { errorMessage, withTimeout } from './util.js';

/**
 * One query answers role, WAL position and (for replicas) the replay position. The CASE keeps the
 * primary-only function from running on a standby and vice versa.
 */
const HEALTH_SQL = `select pg_is_in_recovery() as in_recovery,
  (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_insert_lsn() end)::text as lsn`;

export interface HealthResult {
  inRecovery: boolean;
  lsn: bigint | null;
  latencyMs: number;
}

/** A node of the cluster: its pg pool and what the health checks know about it. Internal. */
export class Node {
  readonly name: string;
  readonly configuredRole: 'primary' | 'replica';
  readonly pool: pg.Pool;
  readonly clientConfig: pg.ClientConfig;

  role: NodeRole;
  healthy = true;
  consecutiveFailures = 0;
  /** Insert LSN (primary) or replay LSN (replica) as last seen. */
  lsn: bigint | null = null;
  lagBytes: number | null = null;
  lagMs: number | null = null;
  latencyMs: number | null = null;
  lastCheckAt: number | null = null;
  lastError: string | null = null;
  /** When this node was seen turning from replica into primary (newest promotion wins the writer role). */
  promotedAt = 0;
  queries = 0;
  errors = 0;

  #healthClient: pg.Client | null = null;
  timer: NodeJS.Timeout | null = null;
  checking: Promise<void> | null = null;

  constructor(
    config: NodeConfig,
    role: 'primary' | 'replica',
    defaultName: string,
    options: ResolvedClusterOptions,
    onPoolError: (node: Node, e: Error) => void,
  ) {
    const { name, ...rest } =
      typeof config === 'string' ? { connectionString: config, name: undefined } : config;
    this.name = name ?? defaultName;
    this.configuredRole = role;
    this.role = role;
    this.clientConfig = rest;
    this.pool = new pg.Pool({
      max: options.pool.max,
      idleTimeoutMillis: options.pool.idleTimeoutMs,
      connectionTimeoutMillis: options.pool.connectionTimeoutMs,
      ...rest,
    });
    // An idle client whose server went away emits 'error' on the pool; unhandled it would crash the process.
    this.pool.on('error', (e) => onPoolError(this, e));
  }

  /** Runs the health query on a dedicated connection (never the pool, so a busy pool is not "down"). */
  async check(timeoutMs: number): Promise<HealthResult> {
    const started = performance.now();
    const timeoutError = () =>
      new DbxError(
        'DBX_CONNECTION_FAILED',
        `health check of node ${this.name} timed out after ${timeoutMs} ms`,
        {
          retryable: true,
          details: { node: this.name, timeoutMs },
        },
      );
    try {
      let client = this.#healthClient;
      if (!client) {
        client = new pg.Client({ ...this.clientConfig, connectionTimeoutMillis: timeoutMs });
        client.on('error', () => {
          // The next check sees the broken client fail and replaces it.
        });
        this.#healthClient = client;
        await withTimeout(client.connect(), timeoutMs, timeoutError);
      }
      const res = await withTimeout(
        client.query<{ in_recovery: boolean; lsn: string | null }>(HEALTH_SQL),
        timeoutMs,
        timeoutError,
      );
      const row = res.rows[0];
      if (!row) throw new Error('health query returned no row');
      return {
        inRecovery: row.in_recovery,
        lsn: row.lsn === null ? null : parseLsn(row.lsn),
        latencyMs: performance.now() - started,
      };
    } catch (e) {
      this.dropHealthClient();
      throw e;
    }
  }

  dropHealthClient(): void {
    const c = this.#healthClient;
    this.#healthClient = null;
    if (c) c.end().catch(() => {});
  }

  /**
   * Cancels whatever statement backend `pid` runs, through a short-lived connection of its own so a
   * full pool cannot block the cancellation.
   */
  async cancelBackend(pid: number, timeoutMs: number): Promise<void> {
    const client = new pg.Client({ ...this.clientConfig, connectionTimeoutMillis: timeoutMs });
    client.on('error', () => {});
    try {
      await withTimeout(
        (async () => {
          await client.connect();
          await client.query('select pg_cancel_backend($1)', [pid]);
        })(),
        timeoutMs,
        () => new Error('cancel timed out'),
      );
    } finally {
      client.end().catch(() => {});
    }
  }

  stats(writer: boolean): NodeStats {
    return {
      name: this.name,
      role: this.role,
      healthy: this.healthy,
      writer,
      totalCount: this.pool.totalCount,
      idleCount: this.pool.idleCount,
      waitingCount: this.pool.waitingCount,
      lagBytes: this.lagBytes,
      lagMs: this.lagMs,
      latencyMs: this.latencyMs,
      lsn: this.lsn === null ? null : formatLsn(this.lsn),
      consecutiveFailures: this.consecutiveFailures,
      lastCheckAt: this.lastCheckAt,
      lastError: this.lastError,
      queries: this.queries,
      errors: this.errors,
    };
  }

  recordFailure(e: unknown): void {
    this.lastError = errorMessage(e);
  }
}
