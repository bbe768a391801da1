/**
 * @x/oversync/server: the go-oversync protocol v1 server on PostgreSQL (through an @x/dbx
 * cluster) with a fastify plugin.
 */
export * from '../shared/index.js';
export {
  isSyncServerError,
  SyncServerError,
  type SyncServerErrorCode,
  UnsupportedSchemaError,
  WIRE_ERROR_STATUS,
} from './errors.js';
export {
  DEFAULT_FASTIFY_BODY_LIMIT,
  type OversyncFastifyOptions,
  oversyncFastifyPlugin,
  oversyncFrameworkErrors,
} from './fastify-plugin.js';
export type { SyncDatabase, SyncQuerier, SyncTxOptions } from './internal/db.js';
export { RawJson, wireJson } from './internal/raw-json.js';
export * from './options.js';
export {
  type Actor,
  type BundleChangeSubscription,
  type BundleSource,
  type BundleWriteFn,
  type CloseOptions,
  createSyncService,
  type DiscoveredSchema,
  type OpOptions,
  type PullParams,
  type ScopeManager,
  type ScopeWriteResult,
  type SyncService,
} from './service.js';
