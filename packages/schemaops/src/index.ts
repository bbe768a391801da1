/**
 * `@x/schemaops`: schema changes fanned out over tenants (schemas or databases) with a Postgres ledger,
 * compensation, and a reconciler that resumes an operation from its first unfinished step.
 */
export { CHANNELS } from './channels.js';
export { physicalDdlRequired, withPhysicalDdlRequired } from './context.js';
export {
  isSchemaOpsError,
  SCHEMAOPS_ERROR_CODES,
  SchemaOpsError,
  type SchemaOpsErrorCode,
  type SchemaOpsErrorOptions,
} from './errors.js';
export { MIGRATIONS } from './migrations.js';
export {
  DEFAULT_CONCURRENCY,
  DEFAULT_FAIL_FAST,
  DEFAULT_LEDGER_SCHEMA,
  DEFAULT_LIST_LIMIT,
  DEFAULT_LOCK_WAIT_MS,
  DEFAULT_RECONCILER_BASE_DELAY_MS,
  DEFAULT_RECONCILER_BATCH_SIZE,
  DEFAULT_RECONCILER_INTERVAL_MS,
  DEFAULT_RECONCILER_LOCK_WAIT_MS,
  DEFAULT_RECONCILER_MAX_ATTEMPTS,
  DEFAULT_RECONCILER_MAX_DELAY_MS,
  type Logger,
  type ReconcilerOptions,
  type ResolvedReconcilerOptions,
  type ResolvedSchemaOpsOptions,
  type SchemaOpsOptions,
} from './options.js';
export { reconcileBackoffMs } from './reconciler.js';
export { createSchemaOps, type SchemaOps } from './schema-ops.js';
export {
  type DatabasePerTenantOptions,
  DEFAULT_BASE_SCHEMA,
  DEFAULT_MAX_OPEN_CLUSTERS,
  DEFAULT_TENANT_POOL_IDLE_TIMEOUT_MS,
  DEFAULT_TENANT_POOL_MAX,
  DEFAULT_TENANT_SCHEMA_PREFIX,
  databasePerTenant,
  type SchemaPerTenantOptions,
  schemaPerTenant,
  type TenantConnection,
  type TenantSource,
  type WithTargetOptions,
} from './tenants.js';
export {
  type AfterCommitContext,
  type BackgroundReconciler,
  type DdlContext,
  type DdlTarget,
  type Direction,
  type ListedOperation,
  OPERATION_STATUSES,
  type Operation,
  type OperationHandler,
  type OperationStatus,
  type OperationSummary,
  type ReconcileOptions,
  type RunInput,
  type SchemaOpsEvent,
  type SchemaOpsEventType,
  type SchemaOpsMetrics,
  type SqlDdlContext,
  STEP_NAMES,
  type StepContext,
  type StepMetrics,
  type StepName,
  type StepRecord,
  type StepState,
  type SystemContext,
  type TenantStepRecord,
} from './types.js';
