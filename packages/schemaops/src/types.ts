import type { Tx } from '@x/dbx';
import type { z } from 'zod';

/**
 * Where an operation stands in the ledger: `'applying'` (running forward, or abandoned by a dead
 * process), `'committed'` (every step succeeded), `'compensating'` (undoing after a tenant or system
 * failure), `'compensated'` (all undone), `'failed'` (the base DDL failed, nothing applied),
 * `'needs_repair'` (the cache step failed, or something could not be undone: `reconcile` it).
 */
export type OperationStatus =
  | 'applying'
  | 'committed'
  | 'compensating'
  | 'compensated'
  | 'failed'
  | 'needs_repair';

/** Every {@link OperationStatus}, frozen (the ledger's check constraint allows the same). */
export const OPERATION_STATUSES: readonly OperationStatus[] = Object.freeze([
  'applying',
  'committed',
  'compensating',
  'compensated',
  'failed',
  'needs_repair',
]);

/**
 * The steps of an operation, in the order they run: the base project's DDL, the DDL of every tenant,
 * the system step (`persistSystem`, on the ledger's cluster) and the cache step (`refreshCache`).
 */
export type StepName = 'base_project_ddl' | 'tenant_ddl' | 'system_schema' | 'cache';
/** Every {@link StepName}, frozen, in the order the steps run. */
export const STEP_NAMES: readonly StepName[] = Object.freeze([
  'base_project_ddl',
  'tenant_ddl',
  'system_schema',
  'cache',
]);

/**
 * The state of one step (or one tenant's step) in the ledger: `'pending'` until it runs,
 * `'succeeded'`, `'failed'`, or `'compensated'` once undone. A skipped base step is recorded
 * `'succeeded'`.
 */
export type StepState = 'pending' | 'succeeded' | 'failed' | 'compensated';

/** Which way an unfinished operation was heading: forward (apply) or backward (compensate). */
export type Direction = 'forward' | 'backward';

/** The ledger's record of one step of an operation. */
export interface StepRecord {
  /** Where the step stands. */
  readonly state: StepState;
  /** The last error of this step (forward, or `compensation: ...` when undoing it failed). */
  readonly error: string | null;
  /** How many times the step ran. */
  readonly attempts: number;
  /** When the record last changed. */
  readonly updatedAt: Date;
}

/** The ledger's record of one tenant's DDL step (one per tenant listed when the operation started). */
export interface TenantStepRecord extends StepRecord {
  /** The tenant, as its {@link TenantSource} lists it. */
  readonly tenant: string;
}

/** One ledger row with its steps. */
export interface Operation {
  readonly id: string;
  readonly project: string;
  readonly type: string;
  readonly request: unknown;
  readonly status: OperationStatus;
  readonly direction: Direction;
  readonly idempotencyKey: string | null;
  readonly skipBaseDdl: boolean;
  readonly physicalDdlRequired: boolean;
  /** 1 for the first run, +1 per reconcile. */
  readonly attemptCount: number;
  /** The error that stopped the forward run (kept after a compensation). */
  readonly lastError: string | null;
  readonly lastErrorCode: string | null;
  /** The error of a failed compensation, if any (never overwritten by the forward error). */
  readonly compensationError: string | null;
  readonly steps: {
    readonly base_project_ddl: StepRecord;
    readonly tenant_ddl: readonly TenantStepRecord[];
    readonly system_schema: StepRecord;
    readonly cache: StepRecord;
  };
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly finishedAt: Date | null;
  /** Earliest time the background reconciler tries it again (null: as soon as it sees it). */
  readonly nextAttemptAt: Date | null;
}

/** Summary row (no steps). */
export type OperationSummary = Omit<Operation, 'steps' | 'request'>;

/** A row of list / listRepairable. */
export interface ListedOperation extends OperationSummary {
  /**
   * An operation of this project is in flight right now (some process holds the project's lock): an
   * `applying` row of the project is then most likely running, not abandoned.
   */
  readonly projectLocked: boolean;
}

/** Where one DDL transaction runs: the project's base target, or one tenant. */
export type DdlTarget = { readonly kind: 'base' } | { readonly kind: 'tenant'; readonly tenant: string };

/** What every handler callback gets: the operation it runs for, its request, its attempt and a signal. */
export interface StepContext<Req = unknown> {
  /** The operation's id (a uuid). */
  readonly operationId: string;
  /** The operation's project. */
  readonly project: string;
  /** The operation's type. */
  readonly type: string;
  /** The request, as the handler's `request` schema decoded it. */
  readonly request: Req;
  /** 1 for the first run, +1 per reconcile. */
  readonly attempt: number;
  /** The run's or reconcile's signal. */
  readonly signal: AbortSignal;
}

/** What `applySql` and `compensateSql` get: the step context and the target the SQL is for. */
export interface SqlDdlContext<Req = unknown> extends StepContext<Req> {
  /** The base target or the tenant. */
  readonly target: DdlTarget;
  /** The target's schema (schema-per-tenant) or null (database-per-tenant: the database's default schema). */
  readonly schema: string | null;
}

/** What `applyDdl` and `compensate` get: the target's context and its open transaction. */
export interface DdlContext<Req = unknown> extends SqlDdlContext<Req> {
  /** The transaction on the target (base or tenant); for schema-per-tenant the search_path is the target schema. */
  readonly tx: Tx;
}

/** What `persistSystem` gets: the step context and a transaction on the ledger's cluster. */
export interface SystemContext<Req = unknown> extends StepContext<Req> {
  /** A transaction on the ledger's cluster; the step is marked succeeded in the same transaction. */
  readonly tx: Tx;
}

/** What `afterCommit` gets: the step context and the operation's `physicalDdlRequired` flag. */
export interface AfterCommitContext<Req = unknown> extends StepContext<Req> {
  /** The operation's flag, also in scope as `physicalDdlRequired()` while `afterCommit` runs. */
  readonly physicalDdlRequired: boolean;
}

/**
 * What an operation type does. Registered by type (`operations` option or `define()`), so that a
 * reconciler — in this process or another — can resume an operation from its ledger row alone.
 * Every callback must be idempotent: a reconcile may re-run a step whose effect landed just before a crash.
 */
export interface OperationHandler<Req = unknown> {
  /** Validates the request on `run` and decodes it from the ledger on `reconcile`. */
  readonly request?: z.ZodType<Req>;
  /**
   * The DDL, run in its own transaction on the base target and on every tenant. A handler has this or
   * `applySql`.
   */
  applyDdl?(ctx: DdlContext<Req>): Promise<void>;
  /**
   * The DDL as plain SQL text (one or more statements, no parameters, no transaction control), instead
   * of `applyDdl`. schemaops sends it together with the transaction's setup (`search_path`) and the
   * tenant's ledger record as one multi-statement query per target: one round trip instead of one per
   * statement plus BEGIN and COMMIT. The statements run as one implicit transaction.
   */
  applySql?(ctx: SqlDdlContext<Req>): string;
  /** Undoes the DDL on one target (must tolerate objects that are already gone). */
  compensate?(ctx: DdlContext<Req>): Promise<void>;
  /** `compensate` as plain SQL text, sent like `applySql`. A handler has at most one of the two. */
  compensateSql?(ctx: SqlDdlContext<Req>): string;
  /** Persists system metadata, in a transaction on the ledger cluster. */
  persistSystem?(ctx: SystemContext<Req>): Promise<void>;
  /** Refreshes derived state (caches). A failure leaves the operation `needs_repair`, nothing is undone. */
  refreshCache?(ctx: StepContext<Req>): Promise<void>;
  /** Runs once after `committed`, inside `withPhysicalDdlRequired(flag)`. Its errors are reported, never fatal. */
  afterCommit?(ctx: AfterCommitContext<Req>): Promise<void> | void;
}

/** What `run` takes: the operation to start. */
export interface RunInput<Req = unknown> {
  /** The project whose base target and tenants get the DDL (1 to 200 characters). */
  readonly project: string;
  /** The operation type: picks the registered handler (1 to 200 characters). */
  readonly type: string;
  /** Checked by the handler's `request` schema; must be JSON (it is stored in the ledger). */
  readonly request: Req;
  /** Skip the base project DDL (tenant-only storage layouts). */
  readonly skipBaseDdl?: boolean;
  /** Repeating a request with the same key (per project) returns / resumes the first operation. */
  readonly idempotencyKey?: string;
  /** Default: the enclosing `withPhysicalDdlRequired` scope, else false. */
  readonly physicalDdlRequired?: boolean;
  /** Overrides the registered handler for this run (reconcile then needs it passed too, or registered). */
  readonly handler?: OperationHandler<Req>;
  /** Tenants processed at once; default the `concurrency` option. */
  readonly concurrency?: number;
  /** Aborts the run. */
  readonly signal?: AbortSignal;
}

/** The options of one `reconcile`. */
export interface ReconcileOptions {
  /** Overrides the registered handler of the operation's type. */
  readonly handler?: OperationHandler<unknown>;
  /** Tenants processed at once; default the `concurrency` option. */
  readonly concurrency?: number;
  /** How long to wait for the project lock; default the `lockWaitMs` option (0 = try once). */
  readonly lockWaitMs?: number;
  /** Aborts the reconcile. */
  readonly signal?: AbortSignal;
}

/**
 * What `on(type, listener)` listeners get (and the diagnostics channels carry): `'step'` once per
 * step and tenant, applied or compensated; `'operation'` with the final status of a run or
 * reconcile; `'reconcile'` with a background reconciler's outcome for one operation;
 * `'afterCommitFailed'` when an `afterCommit` callback threw.
 */
export type SchemaOpsEvent =
  | {
      readonly type: 'step';
      readonly operationId: string;
      readonly project: string;
      readonly step: StepName;
      readonly tenant: string | null;
      readonly state: StepState;
      readonly phase: 'apply' | 'compensate';
      readonly durationMs: number;
      readonly error: string | null;
    }
  | {
      readonly type: 'operation';
      readonly operationId: string;
      readonly project: string;
      readonly operationType: string;
      readonly status: OperationStatus;
      readonly attempt: number;
      readonly durationMs: number;
      readonly error: string | null;
    }
  | {
      readonly type: 'reconcile';
      readonly operationId: string;
      readonly project: string;
      readonly outcome: 'repaired' | 'compensated' | 'failed' | 'locked' | 'exhausted' | 'skipped';
      readonly status: OperationStatus | null;
      readonly attempt: number;
      readonly error: string | null;
      /** When the background reconciler will try again (null: it will not). */
      readonly nextAttemptAt: Date | null;
    }
  | {
      readonly type: 'afterCommitFailed';
      readonly operationId: string;
      readonly project: string;
      readonly error: string;
    };

/** The `type` of a {@link SchemaOpsEvent}: the event names `on` takes. */
export type SchemaOpsEventType = SchemaOpsEvent['type'];

/** Counts of one step kind (every tenant counts for `tenant_ddl`) since `createSchemaOps`. */
export interface StepMetrics {
  /** Applied. */
  succeeded: number;
  /** Failed to apply. */
  failed: number;
  /** Undone. */
  compensated: number;
  /** Failed to undo. */
  compensationFailed: number;
  /** Time spent in the step, applying and compensating, milliseconds. */
  totalMs: number;
}

/** The counters of this `SchemaOps` instance since it was created, returned by `metrics()`. */
export interface SchemaOpsMetrics {
  /**
   * Runs started and how runs and reconciles ended; `deduplicated`: runs that found their idempotency key.
   */
  readonly operations: {
    readonly started: number;
    readonly committed: number;
    readonly compensated: number;
    readonly failed: number;
    readonly needsRepair: number;
    readonly deduplicated: number;
  };
  /** Per step. */
  readonly steps: Readonly<Record<StepName, Readonly<StepMetrics>>>;
  /** Reconciles attempted and their outcomes (`locked` and `exhausted`: background passes). */
  readonly reconcile: {
    readonly attempts: number;
    readonly repaired: number;
    readonly compensated: number;
    readonly failed: number;
    readonly locked: number;
    readonly exhausted: number;
  };
  /** Project locks taken, waits that timed out, and the total time spent waiting (milliseconds). */
  readonly lock: { readonly acquired: number; readonly timeouts: number; readonly waitMsTotal: number };
  /** Ledger write statements this instance issued (for metrics; not a count of rows). */
  readonly ledgerWrites: number;
  /** `run` and `reconcile` calls in flight now. */
  readonly running: number;
}

/** A background reconciler started by `startReconciler`: a pass every `intervalMs` until stopped. */
export interface BackgroundReconciler {
  /** False once stopped. */
  readonly running: boolean;
  /** Runs one pass now (also what each interval tick does); resolves with the outcomes. */
  tick(opts?: { signal?: AbortSignal }): Promise<Array<Extract<SchemaOpsEvent, { type: 'reconcile' }>>>;
  /**
   * Stops the passes: no new one starts, the current one takes no further operation, and a repair in
   * flight finishes. Resolves once it has; every call returns the same promise.
   */
  stop(): Promise<void>;
  /** Same as `stop()`. */
  [Symbol.asyncDispose](): Promise<void>;
}
