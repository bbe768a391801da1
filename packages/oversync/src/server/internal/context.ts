import type { ResolvedSyncServiceOptions, SyncLogger } from '../options.js';
import type { Topology } from './bootstrap.js';
import type { SyncDatabase, SyncTxOptions } from './db.js';

/** What every operation module needs from the service. */
export interface ServiceContext {
  readonly db: SyncDatabase;
  readonly options: ResolvedSyncServiceOptions;
  readonly topology: Topology;
  readonly logger: SyncLogger;
  /** The NOTIFY channel when bundle-change watch is enabled. */
  readonly notifyChannel: string | undefined;
}

export interface OpOptions {
  signal?: AbortSignal | undefined;
}

export function txOpts(signal: AbortSignal | undefined, opts: Omit<SyncTxOptions, 'signal'>): SyncTxOptions {
  return signal ? { ...opts, signal } : opts;
}

export const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
