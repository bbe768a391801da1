/**
 * @x/testkit: real servers for tests and benchmarks (embedded PostgreSQL with streaming replicas,
 * temp SQLite files, child processes) and the faults to inject into them.
 */
export { isTestkitError, TestkitError, type TestkitErrorCode, type TestkitErrorOptions } from './errors.js';
export {
  DEFAULT_REPLICAS,
  DEFAULT_WAIT_FOR_REPLICAS_TIMEOUT_MS,
  EMBEDDED_PASSWORD,
  EMBEDDED_USER,
  externalReplicaUrls,
  MAX_REPLICAS,
  type PgCluster,
  type StartPostgresOptions,
  startPostgres,
} from './postgres/cluster.js';
export {
  DEFAULT_POSTGRES_SETTINGS,
  DEFAULT_PROMOTE_TIMEOUT_MS,
  DEFAULT_START_TIMEOUT_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  type PgNode,
} from './postgres/node.js';
export {
  acquireSharedPostgres,
  type CreateTestDatabaseOptions,
  createTestDatabase,
  DEFAULT_REPLICA_WAIT_MS,
  DEFAULT_TEST_DATABASE_PREFIX,
  releaseSharedPostgres,
  requireEmbedded,
  requireReplicas,
  SHARED_PG_KEY,
  SHARED_REPLICAS,
  type SharedPgContext,
  sharedPostgres,
  TEMPLATE_DATABASE,
  type TestDatabase,
} from './postgres/shared.js';
export { createTcpProxy, type TcpProxy } from './proxy.js';
export {
  type ChildHandle,
  DEFAULT_WAIT_FOR_LINE_TIMEOUT_MS,
  MAX_STDERR_CHARS,
  type SpawnNodeOptions,
  spawnNode,
} from './spawn-node.js';
export {
  DEFAULT_SQLITE_NAME,
  DEFAULT_TEMP_PREFIX,
  type TempDir,
  type TempSqlite,
  tempDir,
  tempSqlite,
} from './temp.js';
export {
  DEFAULT_WAIT_FOR_INTERVAL_MS,
  DEFAULT_WAIT_FOR_TIMEOUT_MS,
  type WaitForOptions,
  waitFor,
} from './wait-for.js';
