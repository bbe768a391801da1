/** `@x/oversync/client`: an offline-first SQLite client for go-oversync protocol v1 servers. */
export { createSyncClient } from './create-sync-client.js';
export {
  CLIENT_ERROR_CODES,
  ClientError,
  type ClientErrorCode,
  isClientError,
  isLifecyclePreconditionError,
} from './errors.js';
export * from './options.js';
export { clientWinsResolver, serverWinsResolver } from './resolvers.js';
export type { ClientMetrics, OpOptions, SyncClient } from './sync-client.js';
export type { FetchLike, Logger, TokenSource } from './transport-types.js';
export type * from './types.js';
export { type WatchDb, type WatchSource, watchQuery } from './watch-query.js';
export type { CoordinatorLike, SqliteDb, SyncWriter } from './writer-types.js';
