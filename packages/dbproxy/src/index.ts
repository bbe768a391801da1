/**
 * `@x/dbproxy`: many processes, one SQLite file. An OS-level lock elects one primary per database
 * file; it owns the `@x/writecoordinator` and serves `db.write` over ZeroMQ JSON-RPC on `ipc://`
 * endpoints; every other process reads its own read-only WAL connection and forwards writes.
 */

export {
  ELECTION_CHANNEL,
  type ElectionPhase,
  EXCLUSIVE_CHANNEL,
  ROLE_CHANNEL,
  SERVE_CHANNEL,
  WRITE_CHANNEL,
} from './channels.js';
export { createDbProxy } from './db-proxy.js';
export {
  type Applied,
  DbProxyError,
  type DbProxyErrorCode,
  isDbProxyError,
  RETRYABLE_BY_DEFAULT,
  WIRE_ERROR_CODES,
  type WireErrorCode,
} from './errors.js';
export {
  type AnyWriteMethod,
  type DbProxyOptions,
  DEFAULT_CHANGES_BUFFER_SIZE,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_DURABILITY,
  DEFAULT_ELECTION_POLL_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_LONG_TIMEOUT_MS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_READ_BUSY_TIMEOUT_MS,
  DEFAULT_RETRY_INITIAL_DELAY_MS,
  DEFAULT_RETRY_MAX_DELAY_MS,
  DEFAULT_STALL_TIMEOUT_MS,
  DEFAULT_TIMEOUT_MS,
  dbProxyOptionsSchema,
  defaultRuntimeDir,
  defineWrite,
  type Logger,
  type ResolvedDbProxyOptions,
  type WriteMethod,
} from './options.js';
export {
  type CommitPublication,
  type ErrorData,
  type HeartbeatPublication,
  METHOD_DB_CHANGES,
  METHOD_DB_PING,
  METHOD_DB_WRITE,
  TOPIC_BYE,
  TOPIC_COMMIT,
  TOPIC_HEARTBEAT,
  type WriteMeta,
} from './protocol.js';
export {
  type ChangeEvent,
  type DbProxy,
  type DbProxyMetrics,
  EXCLUSIVE_METRICS_KEY,
  type ExclusiveOptions,
  type GapChange,
  type MethodMetrics,
  type ReadOptions,
  type Role,
  type RoleChange,
  type WriteChange,
  type WriteOptions,
  type WriteResult,
} from './types.js';
