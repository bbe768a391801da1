import { INVALID_LOGGER_MESSAGE, isLogger, type Logger, parseOptions } from '@x/core';
import type { Cluster } from '@x/dbx';
import { z } from 'zod';
import { clusterSchema, invalidOptions } from './internal/option-schemas.js';
import type { TenantSource } from './tenants.js';
import type { OperationHandler } from './types.js';

/** pino-compatible logger subset: the contract every `@x` package shares, from `@x/core`. */
export type { Logger } from '@x/core';

/** Default `ledgerSchema`: the PostgreSQL schema holding the ledger tables (`'schemaops'`). */
export const DEFAULT_LEDGER_SCHEMA = 'schemaops';
/** Default `concurrency`: tenants processed at once by a run or a reconcile (8). */
export const DEFAULT_CONCURRENCY = 8;
/** Default `failFast` (true): no further tenant is started after the first tenant failure. */
export const DEFAULT_FAIL_FAST = true;
/**
 * Default `lockWaitMs` (30,000 ms): how long `run` and `reconcile` wait for the project lock
 * before SCHEMAOPS_LOCKED.
 */
export const DEFAULT_LOCK_WAIT_MS = 30_000;
/** Default `reconciler.intervalMs`: time between background reconciler passes (5,000 ms). */
export const DEFAULT_RECONCILER_INTERVAL_MS = 5_000;
/**
 * Default `reconciler.maxAttempts` (5): total attempts of an operation, the first run included,
 * before the background reconciler gives up on it (`exhausted`).
 */
export const DEFAULT_RECONCILER_MAX_ATTEMPTS = 5;
/** Default `reconciler.baseDelayMs`: the backoff after a first failed repair, before jitter (1,000 ms). */
export const DEFAULT_RECONCILER_BASE_DELAY_MS = 1_000;
/** Default `reconciler.maxDelayMs`: the cap of the backoff between repairs, before jitter (60,000 ms). */
export const DEFAULT_RECONCILER_MAX_DELAY_MS = 60_000;
/** Default `reconciler.batchSize`: operations a background pass looks at (20). */
export const DEFAULT_RECONCILER_BATCH_SIZE = 20;
/**
 * Default `reconciler.lockWaitMs` (0 ms): a background pass does not wait for a project lock; it
 * skips a project with an operation in flight (`locked`).
 */
export const DEFAULT_RECONCILER_LOCK_WAIT_MS = 0;
/** Default `limit` of `list` and `listRepairable`: rows returned at most (50). */
export const DEFAULT_LIST_LIMIT = 50;

const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

export const reconcilerOptionsSchema = z
  .object({
    /** Time between passes. */
    intervalMs: positiveInt.default(DEFAULT_RECONCILER_INTERVAL_MS),
    /** Total attempts of an operation (the first run counts) before the reconciler gives up on it. */
    maxAttempts: positiveInt.default(DEFAULT_RECONCILER_MAX_ATTEMPTS),
    /** Backoff after a failed repair: min(maxDelayMs, baseDelayMs * 2^(attempt-1)) with ±50% jitter. */
    baseDelayMs: nonNegInt.default(DEFAULT_RECONCILER_BASE_DELAY_MS),
    /** The backoff's cap, before jitter. */
    maxDelayMs: nonNegInt.default(DEFAULT_RECONCILER_MAX_DELAY_MS),
    /** Operations looked at per pass. */
    batchSize: positiveInt.default(DEFAULT_RECONCILER_BATCH_SIZE),
    /** Only this project's operations (null: every project). */
    project: z.string().min(1).nullable().default(null),
    /** How long a pass waits for a project lock; 0 = skip projects with an operation in flight. */
    lockWaitMs: nonNegInt.default(DEFAULT_RECONCILER_LOCK_WAIT_MS),
  })
  .strict();

/**
 * The background reconciler's options: the `reconciler` option of `createSchemaOps`, and what
 * `startReconciler` takes to override it. Every field has a default (the `DEFAULT_RECONCILER_*`
 * constants).
 */
export type ReconcilerOptions = z.input<typeof reconcilerOptionsSchema>;
/** {@link ReconcilerOptions} validated, with every default filled in. */
export type ResolvedReconcilerOptions = z.output<typeof reconcilerOptionsSchema>;

const loggerSchema = z.custom<Logger>(isLogger, { message: INVALID_LOGGER_MESSAGE });

/**
 * What is wrong with an operation handler, or null: it needs the DDL as a callback (`applyDdl`) or as
 * SQL text (`applySql`), exactly one of them, and at most one way to compensate.
 */
export function handlerProblem(v: unknown): string | null {
  if (typeof v !== 'object' || v === null) return 'an operation handler must be an object';
  const h = v as Record<string, unknown>;
  const fnOrAbsent = (k: string) => h[k] === undefined || typeof h[k] === 'function';
  if (!['applyDdl', 'applySql', 'compensate', 'compensateSql'].every(fnOrAbsent)) {
    return 'applyDdl, applySql, compensate and compensateSql must be functions';
  }
  if ((h.applyDdl === undefined) === (h.applySql === undefined)) {
    return 'an operation handler needs an applyDdl or an applySql function (one of them)';
  }
  if (h.compensate !== undefined && h.compensateSql !== undefined) {
    return 'an operation handler has compensate or compensateSql, not both';
  }
  return null;
}

/** An operation handler, checked by `handlerProblem`. */
export const handlerSchema = z.custom<OperationHandler<unknown>>().superRefine((v, ctx) => {
  const problem = handlerProblem(v);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

export const schemaOpsOptionsSchema = z
  .object({
    /** The ledger's cluster: ledger tables, project advisory locks and the system step's transaction. */
    cluster: clusterSchema,
    tenants: z.custom<TenantSource>(
      (v) =>
        typeof v === 'object' &&
        v !== null &&
        typeof (v as TenantSource).list === 'function' &&
        typeof (v as TenantSource).withTarget === 'function',
      { message: 'tenants must be a TenantSource (schemaPerTenant / databasePerTenant)' },
    ),
    /** Schema holding the ledger tables (migrated by the package). */
    ledgerSchema: z
      .string()
      .regex(/^[a-z_][a-z0-9_]{0,62}$/, 'ledgerSchema must be a lower-case SQL identifier')
      .default(DEFAULT_LEDGER_SCHEMA),
    /** Tenants processed at once. */
    concurrency: positiveInt.max(256).default(DEFAULT_CONCURRENCY),
    /** Stop starting tenants after the first tenant failure. */
    failFast: z.boolean().default(DEFAULT_FAIL_FAST),
    /** How long run / reconcile wait for the project's lock before SCHEMAOPS_LOCKED. */
    lockWaitMs: nonNegInt.default(DEFAULT_LOCK_WAIT_MS),
    operations: z.record(z.string().min(1), handlerSchema).default({}),
    reconciler: reconcilerOptionsSchema.prefault({}),
    logger: loggerSchema.optional(),
  })
  .strict();

/**
 * What `createSchemaOps` takes: `cluster` and `tenants` are required, every other field has a
 * default. Validated once (bad options throw SCHEMAOPS_INVALID_OPTIONS) and frozen.
 */
export interface SchemaOpsOptions {
  /**
   * The ledger's `@x/dbx` cluster: ledger tables, project advisory locks and the system step's
   * transaction.
   */
  cluster: Cluster;
  /**
   * Where the DDL lands: `schemaPerTenant(...)`, `databasePerTenant(...)` or your own
   * {@link TenantSource}.
   */
  tenants: TenantSource;
  /** Schema holding the ledger tables (migrated by the package). Default {@link DEFAULT_LEDGER_SCHEMA}. */
  ledgerSchema?: string;
  /** Tenants processed at once (1 to 256). Default {@link DEFAULT_CONCURRENCY}. */
  concurrency?: number;
  /** Stop starting tenants after the first tenant failure. Default {@link DEFAULT_FAIL_FAST}. */
  failFast?: boolean;
  /** How long `run` / `reconcile` wait for the project's lock. Default {@link DEFAULT_LOCK_WAIT_MS}. */
  lockWaitMs?: number;
  /** Handlers by operation type (also `define(type, handler)`). Default none. */
  // biome-ignore lint/suspicious/noExplicitAny: handlers of any request type
  operations?: Record<string, OperationHandler<any>>;
  /** The background reconciler's defaults (see {@link ReconcilerOptions}). */
  reconciler?: ReconcilerOptions;
  /** pino-compatible logger. Default: none (silent). */
  logger?: Logger;
}

/** {@link SchemaOpsOptions} validated, with every default filled in, frozen: `ops.options`. */
export type ResolvedSchemaOpsOptions = z.output<typeof schemaOpsOptionsSchema>;

/**
 * Validated once, deep-frozen once; the cluster, the tenant source, the logger and the handler
 * objects stay the caller's (see `@x/core`'s parseOptions).
 */
export function parseSchemaOpsOptions(input: unknown): Readonly<ResolvedSchemaOpsOptions> {
  return parseOptions(schemaOpsOptionsSchema, input, (e) => invalidOptions('schemaops options', e));
}

export function parseReconcilerOptions(
  input: unknown,
  defaults: ResolvedReconcilerOptions,
): Readonly<ResolvedReconcilerOptions> {
  return parseOptions(reconcilerOptionsSchema, { ...defaults, ...(input as object | undefined) }, (e) =>
    invalidOptions('reconciler options', e),
  );
}
