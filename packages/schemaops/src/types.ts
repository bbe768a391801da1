import type { Tx } from '@x/dbx';
import type { z } from 'zod';

export type OperationStatus =
  | 'applying'
  | 'committed'
  | 'compensating'
  | 'compensated'
  | 'failed'
  | 'needs_repair';

export const OPERATION_STATUSES: readonly OperationStatus[] = Object.freeze([
  'applying',
  'committed',
  'compensating',
  'compensated',
  'failed',
  'needs_repair',
]);

export type StepName = 'base_project_ddl' | 'tenant_ddl' | 'system_schema' | 'cache';
export const STEP_NAMES: readonly StepName[] = Object.freeze([
  'base_project_ddl',
  'tenant_ddl',
  'system_schema',
  'cache',
]);

export type StepState = 'pending' | 'succeeded' | 'failed' | 'compensated';

/** Which way an unfinished operation was heading: forward (apply) or backward (compensate). */
export type Direction = 'forward' | 'backward';

export interface StepRecord {
  readonly state: StepState;
  /** The last error of this step (forward, or `compensation: ...` when undoing it failed). */
  readonly error: string | null;
  readonly attempts: number;
  readonly updatedAt: Date;
}

export interface TenantStepRecord extends StepRecord {
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

export type DdlTarget = { readonly kind: 'base' } | { readonly kind: 'tenant'; readonly tenant: string };

export interface StepContext<Req = unknown> {
  readonly operationId: string;
  readonly project: string;
  readonly type: string;
  readonly request: Req;
  /** 1 for the first run, +1 per reconcile. */
  readonly attempt: number;
  readonly signal: AbortSignal;
}

export interface SqlDdlContext<Req = unknown> extends StepContext<Req> {
  readonly target: DdlTarget;
  /** The target's schema (schema-per-tenant) or null (database-per-tenant: the database's default schema). */
  readonly schema: string | null;
}

export interface DdlContext<Req = unknown> extends SqlDdlContext<Req> {
  /** The transaction on the target (base or tenant); for schema-per-tenant the search_path is the target schema. */
  readonly tx: Tx;
}

export interface SystemContext<Req = unknown> extends StepContext<Req> {
  /** A transaction on the ledger's cluster; the step is marked succeeded in the same transaction. */
  readonly tx: Tx;
}

export interface AfterCommitContext<Req = unknown> extends StepContext<Req> {
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

export interface RunInput<Req = unknown> {
  readonly project: string;
  readonly type: string;
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
  readonly signal?: AbortSignal;
}

export interface ReconcileOptions {
  readonly handler?: OperationHandler<unknown>;
  readonly concurrency?: number;
  /** How long to wait for the project lock; default the `lockWaitMs` option (0 = try once). */
  readonly lockWaitMs?: number;
  readonly signal?: AbortSignal;
}

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

export type SchemaOpsEventType = SchemaOpsEvent['type'];

export interface StepMetrics {
  succeeded: number;
  failed: number;
  compensated: number;
  compensationFailed: number;
  totalMs: number;
}

export interface SchemaOpsMetrics {
  readonly operations: {
    readonly started: number;
    readonly committed: number;
    readonly compensated: number;
    readonly failed: number;
    readonly needsRepair: number;
    readonly deduplicated: number;
  };
  readonly steps: Readonly<Record<StepName, Readonly<StepMetrics>>>;
  readonly reconcile: {
    readonly attempts: number;
    readonly repaired: number;
    readonly compensated: number;
    readonly failed: number;
    readonly locked: number;
    readonly exhausted: number;
  };
  readonly lock: { readonly acquired: number; readonly timeouts: number; readonly waitMsTotal: number };
  readonly ledgerWrites: number;
  readonly running: number;
}

export interface BackgroundReconciler {
  readonly running: boolean;
  /** Runs one pass now (also what each interval tick does); resolves with the outcomes. */
  tick(opts?: { signal?: AbortSignal }): Promise<Array<Extract<SchemaOpsEvent, { type: 'reconcile' }>>>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
