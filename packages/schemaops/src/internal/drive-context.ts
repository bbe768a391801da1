import type { Cluster } from '@x/dbx';
import { errorCode, errorMessage, SchemaOpsError } from '../errors.js';
import type { Logger } from '../options.js';
import type { TenantSource } from '../tenants.js';
import type {
  Operation,
  OperationHandler,
  OperationStatus,
  StepContext,
  StepName,
  StepState,
} from '../types.js';
import type { Ledger } from './ledger.js';
import type { ProjectLock } from './lock.js';
import type { Telemetry } from './telemetry.js';

/** What driving an operation needs from the orchestrator. */
export interface DriveDeps {
  readonly cluster: Cluster;
  readonly tenants: TenantSource;
  readonly ledger: Ledger;
  readonly failFast: boolean;
  readonly log: Logger | undefined;
  readonly telemetry: Telemetry;
  /** The owner written into the ledger row (host:pid). */
  readonly owner: string;
  decodeRequest(handler: OperationHandler<unknown>, type: string, raw: unknown): unknown;
  load(id: string): Promise<Operation>;
}

export interface Failure {
  step: StepName;
  tenant: string | null;
  error: unknown;
  /** The user's signal aborted the run (the error is its reason). */
  aborted: boolean;
}

export interface Outcome {
  status: OperationStatus;
  /** What run()/reconcile() throw when the status is not what they promise. */
  error: unknown;
}

/** Everything one drive of an operation needs. */
export interface Drive {
  deps: DriveDeps;
  op: Operation;
  handler: OperationHandler<unknown>;
  lock: ProjectLock;
  /** User signal + lock loss: stops the forward run. */
  stop: AbortSignal;
  user: AbortSignal | undefined;
  concurrency: number;
  ctx: StepContext<unknown>;
  /** Targets whose DDL transaction committed in this drive ('' = base). */
  committed: Set<string>;
  /** Journal folds started in this drive (run alongside the next steps; awaited before it ends). */
  folds: Array<Promise<void>>;
}

/** The key of the base target in `Drive.committed`. */
export const BASE_KEY = '\u0000base';

export function checkLock(d: Drive): void {
  if (d.lock.signal.aborted) throw d.lock.signal.reason;
}

/** A step failure, or the user's abort when that is what stopped it (then the error is the abort reason). */
export function failureOf(d: Drive, step: StepName, tenant: string | null, error: unknown): Failure {
  return userAbort(d, step) ?? { step, tenant, error, aborted: false };
}

export function userAbort(d: Drive, step: StepName): Failure | null {
  if (d.user?.aborted) return { step, tenant: null, error: d.user.reason, aborted: true };
  return null;
}

/** Records a step's state where a failure to record must not hide the original error. */
export async function markQuietly(
  deps: DriveDeps,
  id: string,
  step: StepName,
  tenant: string | null,
  state: StepState,
  error: string,
  countAttempt: boolean,
): Promise<void> {
  try {
    await deps.ledger.markStep(deps.cluster, id, step, tenant, state, error, countAttempt);
  } catch (e) {
    deps.log?.warn({ err: errorMessage(e), operationId: id, step }, 'schemaops could not record a step');
  }
}

/** Folds the tenant journal into `steps`; a failure only leaves it for later (reads see both). */
export async function foldQuietly(deps: DriveDeps, id: string): Promise<void> {
  try {
    await deps.ledger.foldTenantEvents(id);
  } catch (e) {
    deps.log?.warn({ err: errorMessage(e), operationId: id }, 'schemaops could not fold tenant states');
  }
}

export function stepFailed(
  op: { id: string; project: string },
  f: Failure,
  status: OperationStatus,
): SchemaOpsError {
  const where = f.tenant === null ? f.step : `${f.step} (tenant ${f.tenant})`;
  return new SchemaOpsError(
    'SCHEMAOPS_STEP_FAILED',
    `operation ${op.id}: ${where} failed: ${errorMessage(f.error)}`,
    {
      cause: f.error,
      details: {
        operationId: op.id,
        project: op.project,
        step: f.step,
        tenant: f.tenant,
        status,
        errorCode: errorCode(f.error),
      },
    },
  );
}
