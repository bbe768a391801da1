import type { SyncDatabase, SyncQuerier, SyncTxOptions } from '../database.js';
import type { ResolvedSyncServiceOptions, SyncLogger } from '../options.js';
import { StatementBatch } from './batch.js';
import type { Topology } from './topology.js';

/** What every operation module needs from the service. */
export interface ServiceContext {
  readonly db: SyncDatabase;
  readonly options: ResolvedSyncServiceOptions;
  readonly topology: Topology;
  readonly logger: SyncLogger;
  /** The NOTIFY channel when bundle-change watch is enabled. */
  readonly notifyChannel: string | undefined;
  /** Work that outlives its request (a snapshot session's background build); absent: none. */
  readonly background?: BackgroundTasks | undefined;
}

/** The service's tasks that outlive their request: `close()` waits for them, then aborts them. */
export interface BackgroundTasks {
  /** Starts `task` with the service's abort signal; it counts as in flight until it settles. */
  start(name: string, task: (signal: AbortSignal) => Promise<void>): void;
  /** How many tasks named `name` run now in this process. */
  running(name: string): number;
}

export interface OpOptions {
  signal?: AbortSignal | undefined;
}

export function txOpts(signal: AbortSignal | undefined, opts: Omit<SyncTxOptions, 'signal'>): SyncTxOptions {
  return signal ? { ...opts, signal } : opts;
}

export const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/**
 * A request's transaction whose cost its parameters bound (everything but a push commit and a
 * snapshot's materialisation, which take as long as the data they write): every statement runs
 * under `limits.requestStatementTimeoutMs`, a backstop behind the explicit caps. A statement cut
 * by it fails with SQLSTATE 57014, which the service answers as `503 service_unavailable`.
 */
export function boundedTx<T>(
  ctx: ServiceContext,
  fn: (tx: SyncQuerier) => Promise<T>,
  opts: SyncTxOptions,
): Promise<T> {
  const ms = ctx.options.limits.requestStatementTimeoutMs;
  if (ms === 0) return ctx.db.runTx(fn, opts);
  return ctx.db.runTx(async (tx) => {
    await tx.query(`SET LOCAL statement_timeout = ${Math.ceil(ms)}`);
    return fn(tx);
  }, opts);
}

/**
 * boundedTx whose callback gets a StatementBatch: the `SET LOCAL statement_timeout` (and whatever
 * the callback queues with `later`) travels with its first statement, in one round trip.
 */
export function boundedBatchTx<T>(
  ctx: ServiceContext,
  fn: (tx: StatementBatch) => Promise<T>,
  opts: SyncTxOptions,
): Promise<T> {
  const ms = ctx.options.limits.requestStatementTimeoutMs;
  return ctx.db.runTx(async (raw) => {
    const tx = new StatementBatch(raw);
    if (ms > 0) tx.later(`SET LOCAL statement_timeout = ${Math.ceil(ms)}`);
    const r = await fn(tx);
    await tx.flush();
    return r;
  }, opts);
}
