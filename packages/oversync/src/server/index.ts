/**
 * `@x/oversync/server`: the go-oversync protocol v1 server on PostgreSQL (through an `@x/dbx`
 * cluster) with a fastify plugin.
 */
export * from '../shared/index.js';
export type { Actor } from './actor.js';
export {
  BACKEND_WRITE_SCOPE_CHANGE_SQLSTATE,
  BACKEND_WRITE_SOURCE_ID,
  BACKEND_WRITE_TRUNCATE_SQLSTATE,
  BACKEND_WRITE_UNATTRIBUTABLE_SQLSTATE,
} from './backend-writes.js';
export type { BundleChangeSubscription } from './bundle-change-subscription.js';
export type { SyncDatabase, SyncQuerier, SyncTxOptions } from './database.js';
export type { DiscoveredSchema } from './discovered-schema.js';
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
export {
  type OpenApiDocument,
  type OpenApiOperation,
  type OversyncOpenApiOptions,
  oversyncOpenApiDocument,
} from './openapi/document.js';
export * from './options.js';
export type { PullParams } from './pull-params.js';
export { RawJson, wireJson } from './raw-json.js';
export type { BundleSource, BundleWriteFn, ScopeWriteResult } from './server-writes.js';
export {
  type CloseOptions,
  createSyncService,
  type OpOptions,
  type ScopeManager,
  type SyncService,
} from './service.js';
