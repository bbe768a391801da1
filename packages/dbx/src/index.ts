/**
 * `@x/dbx`: a PostgreSQL cluster client on pg. Primary + replicas, routing by method, health checks with
 * role and lag, safe retries, transactions with a context querier, and read-your-writes tokens.
 */
export { healthChannel, type QueryMessage, queryChannel } from './channels.js';
export { createCluster } from './cluster.js';
export { collect, collectOne } from './collect.js';
export {
  constraintName,
  DBX_ERROR_CODES,
  DbxError,
  type DbxErrorCode,
  isConnectionError,
  isConstraintViolation,
  isDbxError,
  isRetryable,
  isSerializationFailure,
  pgErrorCode,
} from './errors.js';
export {
  type ClusterOptions,
  DEFAULT_CLOSE_DRAIN_TIMEOUT_MS,
  DEFAULT_HEALTH_CHECK_FAILURES_BEFORE_DOWN,
  DEFAULT_HEALTH_CHECK_FAST_RECHECK_MS,
  DEFAULT_HEALTH_CHECK_INTERVAL_MS,
  DEFAULT_HEALTH_CHECK_TIMEOUT_MS,
  DEFAULT_MAX_REPLICA_LAG_BYTES,
  DEFAULT_MAX_REPLICA_LAG_MS,
  DEFAULT_POOL_CONNECTION_TIMEOUT_MS,
  DEFAULT_POOL_IDLE_TIMEOUT_MS,
  DEFAULT_POOL_MAX,
  DEFAULT_READ_CONSISTENCY,
  DEFAULT_READ_YOUR_WRITES_WAIT_MS,
  DEFAULT_RETRY_BASE_DELAY_MS,
  DEFAULT_RETRY_BUDGET_MIN_PER_SECOND,
  DEFAULT_RETRY_BUDGET_RATIO,
  DEFAULT_RETRY_MAX_ATTEMPTS,
  DEFAULT_RETRY_MAX_DELAY_MS,
  DEFAULT_SLOW_QUERY_THRESHOLD_MS,
  type Logger,
  type NodeConfig,
  type ReadConsistency,
  type ResolvedClusterOptions,
} from './options.js';
export { currentQuerier } from './tx.js';
export type {
  Cluster,
  ClusterEvent,
  ClusterEventMap,
  ClusterStats,
  IsolationLevel,
  NodeClass,
  NodeRole,
  NodeStateEvent,
  NodeStats,
  Querier,
  QueryOptions,
  QueryResult,
  ReadOptions,
  RoleChangeEvent,
  StatementOptions,
  Tx,
  TxHandle,
  TxOptions,
} from './types.js';
