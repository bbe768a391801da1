import {
  formatOptionIssues,
  INVALID_LOGGER_MESSAGE,
  isLogger,
  type Logger,
  optionIssues,
  parseOptions,
} from '@x/core';
import type pg from 'pg';
import { z } from 'zod';
import { DbxError } from './errors.js';

/** pino-compatible logger subset: the contract every `@x` package shares, from `@x/core`. */
export type { Logger } from '@x/core';

/** A node: a connection string, or a pg pool config (optionally named). */
export type NodeConfig = string | (pg.PoolConfig & { name?: string });

/** `pool.max`: connections per node. */
export const DEFAULT_POOL_MAX = 10;
/** `pool.idleTimeoutMs`: an idle connection is closed after this long. */
export const DEFAULT_POOL_IDLE_TIMEOUT_MS = 10_000;
/** `pool.connectionTimeoutMs`: how long to wait for a new connection. */
export const DEFAULT_POOL_CONNECTION_TIMEOUT_MS = 5_000;
/** `retry.maxAttempts`: attempts of a call (the first included). */
export const DEFAULT_RETRY_MAX_ATTEMPTS = 3;
/** `retry.baseDelayMs`: the backoff before the first retry (doubled per retry, full jitter). */
export const DEFAULT_RETRY_BASE_DELAY_MS = 20;
/** `retry.maxDelayMs`: the longest backoff between retries. */
export const DEFAULT_RETRY_MAX_DELAY_MS = 1_000;
/** Retries may be at most this share of requests (over 10 s)... */
export const DEFAULT_RETRY_BUDGET_RATIO = 0.2;
/** ...plus this many per second, whatever the traffic. */
export const DEFAULT_RETRY_BUDGET_MIN_PER_SECOND = 10;
/** `healthCheck.intervalMs`: time between health checks of a node. */
export const DEFAULT_HEALTH_CHECK_INTERVAL_MS = 1_000;
/** `healthCheck.timeoutMs`: a health check slower than this failed. */
export const DEFAULT_HEALTH_CHECK_TIMEOUT_MS = 1_000;
/** `healthCheck.failuresBeforeDown`: failed checks in a row before a node is taken out of use. */
export const DEFAULT_HEALTH_CHECK_FAILURES_BEFORE_DOWN = 2;
/** After a connection error on a node, re-check it this soon instead of waiting for the interval. */
export const DEFAULT_HEALTH_CHECK_FAST_RECHECK_MS = 50;
/** `maxReplicaLagMs`: replicas further behind serve no reads. */
export const DEFAULT_MAX_REPLICA_LAG_MS = 5_000;
/** `maxReplicaLagBytes`: no bound on WAL bytes behind. */
export const DEFAULT_MAX_REPLICA_LAG_BYTES: number | null = null;
/** `readConsistency`: reads inside `session()` honour the session's token. */
export const DEFAULT_READ_CONSISTENCY: ReadConsistency = 'session';
/** `readYourWritesWaitMs`: a read with a token goes to the primary at once when no replica has replayed it. */
export const DEFAULT_READ_YOUR_WRITES_WAIT_MS = 0;
/** `slowQueryThresholdMs`: statements slower than this are logged at warn. */
export const DEFAULT_SLOW_QUERY_THRESHOLD_MS = 1_000;
/** `closeDrainTimeoutMs`: how long `close()` waits for calls in flight before ending the pools. */
export const DEFAULT_CLOSE_DRAIN_TIMEOUT_MS = 5_000;

/** `'session'`: inside `session()` reads honour the session token; `'eventual'`: only an explicit `{ token }` does. */
export type ReadConsistency = 'session' | 'eventual';

const nodeSchema = z.union([
  z.string().min(1, 'a connection string must not be empty'),
  z
    .custom<Exclude<NodeConfig, string>>(
      (v) =>
        typeof v === 'object' &&
        v !== null &&
        !Array.isArray(v) &&
        ((v as { name?: unknown }).name === undefined ||
          (typeof (v as { name?: unknown }).name === 'string' && (v as { name: string }).name.length > 0)),
      {
        message: 'a node is a connection string or a pg PoolConfig object (with an optional non-empty name)',
      },
    )
    // A copy, so the resolved options freeze it while the caller's object (and what it holds, such
    // as `ssl`, which pg redefines properties on) stays the caller's.
    .transform((v) => ({ ...v })),
]);

const loggerSchema = z.custom<Logger>(isLogger, { message: INVALID_LOGGER_MESSAGE });

/** The longest delay a Node timer can hold; a longer one fires after 1 ms (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2_147_483_647;

const positiveInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
/** A delay that becomes a timer: longer than MAX_TIMER_MS would fire at once instead of never. */
const timerMs = (min: 0 | 1) =>
  z
    .number()
    .int()
    .min(min)
    .max(MAX_TIMER_MS, `at most ${MAX_TIMER_MS} ms (the longest a Node timer can wait)`);

export const clusterOptionsSchema = z.strictObject({
  primary: nodeSchema,
  replicas: z.array(nodeSchema).default([]),
  pool: z
    .strictObject({
      max: positiveInt.default(DEFAULT_POOL_MAX),
      idleTimeoutMs: timerMs(0).default(DEFAULT_POOL_IDLE_TIMEOUT_MS),
      connectionTimeoutMs: timerMs(0).default(DEFAULT_POOL_CONNECTION_TIMEOUT_MS),
    })
    .prefault({}),
  retry: z
    .strictObject({
      maxAttempts: positiveInt.default(DEFAULT_RETRY_MAX_ATTEMPTS),
      baseDelayMs: timerMs(0).default(DEFAULT_RETRY_BASE_DELAY_MS),
      maxDelayMs: timerMs(0).default(DEFAULT_RETRY_MAX_DELAY_MS),
      /** Bounds retries during an outage; null = no budget (every retryable failure may retry). */
      budget: z
        .strictObject({
          ratio: z.number().nonnegative().default(DEFAULT_RETRY_BUDGET_RATIO),
          minPerSecond: z.number().nonnegative().default(DEFAULT_RETRY_BUDGET_MIN_PER_SECOND),
        })
        .nullable()
        .prefault({}),
    })
    .prefault({}),
  healthCheck: z
    .strictObject({
      intervalMs: timerMs(1).default(DEFAULT_HEALTH_CHECK_INTERVAL_MS),
      timeoutMs: timerMs(1).default(DEFAULT_HEALTH_CHECK_TIMEOUT_MS),
      failuresBeforeDown: positiveInt.default(DEFAULT_HEALTH_CHECK_FAILURES_BEFORE_DOWN),
      fastRecheckMs: timerMs(1).default(DEFAULT_HEALTH_CHECK_FAST_RECHECK_MS),
    })
    .prefault({}),
  /** Replicas further behind than this (time) are not used; null disables the bound. */
  maxReplicaLagMs: nonNegInt.nullable().default(DEFAULT_MAX_REPLICA_LAG_MS),
  /** Replicas further behind than this (bytes of WAL) are not used; null disables the bound. */
  maxReplicaLagBytes: nonNegInt.nullable().default(DEFAULT_MAX_REPLICA_LAG_BYTES),
  readConsistency: z.enum(['session', 'eventual']).default(DEFAULT_READ_CONSISTENCY),
  /** How long a read with a token may wait for a replica to catch up before going to the primary. */
  readYourWritesWaitMs: timerMs(0).default(DEFAULT_READ_YOUR_WRITES_WAIT_MS),
  /** Queries slower than this are logged at warn (without parameter values); null disables. */
  slowQueryThresholdMs: nonNegInt.nullable().default(DEFAULT_SLOW_QUERY_THRESHOLD_MS),
  closeDrainTimeoutMs: timerMs(0).default(DEFAULT_CLOSE_DRAIN_TIMEOUT_MS),
  logger: loggerSchema.optional(),
});

/** Options of `createCluster`; every omitted value takes the matching `DEFAULT_*`. */
export interface ClusterOptions {
  /** The primary (the writer until a health check finds another node is). */
  primary: NodeConfig;
  /** Streaming replicas serving reads. Default none. */
  replicas?: NodeConfig[];
  /** Each node's pg pool. */
  pool?: { max?: number; idleTimeoutMs?: number; connectionTimeoutMs?: number };
  /** Retries of failed calls when a retry is safe; `budget: null` lifts the bound on retries during an outage. */
  retry?: {
    maxAttempts?: number;
    baseDelayMs?: number;
    maxDelayMs?: number;
    budget?: { ratio?: number; minPerSecond?: number } | null;
  };
  /** Background health checks of every node (role, lag, latency). */
  healthCheck?: {
    intervalMs?: number;
    timeoutMs?: number;
    failuresBeforeDown?: number;
    fastRecheckMs?: number;
  };
  /** Replicas further behind than this (time) serve no reads; null disables the bound. */
  maxReplicaLagMs?: number | null;
  /** Replicas further behind than this (bytes of WAL) serve no reads; null disables the bound. */
  maxReplicaLagBytes?: number | null;
  /** Whether reads inside `session()` honour the session's token. */
  readConsistency?: ReadConsistency;
  /** How long a read with a token may wait for a replica to catch up before going to the primary. */
  readYourWritesWaitMs?: number;
  /** Statements slower than this are logged at warn (without parameter values); null disables. */
  slowQueryThresholdMs?: number | null;
  /** How long `close()` waits for calls in flight before ending the pools. */
  closeDrainTimeoutMs?: number;
  /** Where dbx logs (pino or any look-alike). Default: nothing is logged. */
  logger?: Logger;
}
/** {@link ClusterOptions} after validation, every default filled in (`cluster.options`). */
export type ResolvedClusterOptions = z.output<typeof clusterOptionsSchema>;

/** DBX_INVALID_OPTIONS naming each problem by its key path (`retry.budget.ratioo: unknown option`). */
export function invalidOptions(what: string, error: z.ZodError): DbxError {
  return new DbxError('DBX_INVALID_OPTIONS', `invalid ${what}: ${formatOptionIssues(optionIssues(error))}`, {
    details: { issues: error.issues },
  });
}

/**
 * Validates the options once and deep-freezes the result (DBX_INVALID_OPTIONS otherwise). Unknown
 * keys are refused at every level but inside a node's pg PoolConfig, which goes to pg as it is.
 */
export function resolveOptions(options: unknown): ResolvedClusterOptions {
  return parseOptions(clusterOptionsSchema, options, (error) => invalidOptions('dbx options', error));
}
