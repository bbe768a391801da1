/** The public types of server-originated writes (`withinSyncBundle`, the scope manager). */
import type { Bundle } from '../shared/wire.js';
import type { SyncQuerier } from './database.js';

/** Which source a server-originated bundle is written as. */
export interface BundleSource {
  sourceId: string;
  sourceBundleId: number;
}

/** The callback of a server-originated write: runs inside the bundle's transaction, once. */
export type BundleWriteFn = (tx: SyncQuerier) => Promise<void>;

/** What `scopeManager().execWrite` resolves to: the committed bundle, and whether it initialized the scope. */
export interface ScopeWriteResult {
  /** The scope was UNINITIALIZED and this write initialised it (no device can win initialize_local afterwards). */
  autoInitialized: boolean;
  bundle: Bundle;
}
