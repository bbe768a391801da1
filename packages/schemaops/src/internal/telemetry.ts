import { CHANNELS } from '../channels.js';
import { errorMessage } from '../errors.js';
import type { Logger } from '../options.js';
import {
  type Operation,
  type OperationStatus,
  type SchemaOpsEvent,
  type SchemaOpsEventType,
  type SchemaOpsMetrics,
  STEP_NAMES,
  type StepMetrics,
  type StepName,
  type StepState,
} from '../types.js';

function emptyStepMetrics(): StepMetrics {
  return { succeeded: 0, failed: 0, compensated: 0, compensationFailed: 0, totalMs: 0 };
}

/** Counters, event listeners and diagnostics channels: every event goes out through `report`. */
export class Telemetry {
  readonly counts = {
    operations: { started: 0, committed: 0, compensated: 0, failed: 0, needsRepair: 0, deduplicated: 0 },
    steps: Object.fromEntries(STEP_NAMES.map((s) => [s, emptyStepMetrics()])) as Record<
      StepName,
      StepMetrics
    >,
    reconcile: { attempts: 0, repaired: 0, compensated: 0, failed: 0, locked: 0, exhausted: 0 },
    lock: { acquired: 0, timeouts: 0, waitMsTotal: 0 },
  };
  readonly #listeners = new Map<SchemaOpsEventType, Set<(e: SchemaOpsEvent) => void>>();
  readonly #log: Logger | undefined;

  constructor(log: Logger | undefined) {
    this.#log = log;
  }

  on<E extends SchemaOpsEventType>(
    event: E,
    listener: (e: Extract<SchemaOpsEvent, { type: E }>) => void,
  ): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    const l = listener as (e: SchemaOpsEvent) => void;
    set.add(l);
    return () => {
      set.delete(l);
    };
  }

  /** A copy of the counters. */
  snapshot(ledgerWrites: number, running: number): SchemaOpsMetrics {
    const m = this.counts;
    return {
      operations: { ...m.operations },
      steps: Object.fromEntries(STEP_NAMES.map((s) => [s, { ...m.steps[s] }])) as Record<
        StepName,
        StepMetrics
      >,
      reconcile: { ...m.reconcile },
      lock: { ...m.lock },
      ledgerWrites,
      running,
    };
  }

  report(e: SchemaOpsEvent): void {
    const ch = CHANNELS[e.type];
    if (ch.hasSubscribers) ch.publish(e);
    const set = this.#listeners.get(e.type);
    if (set) {
      for (const l of [...set]) {
        try {
          l(e);
        } catch (err) {
          this.#log?.warn({ err: errorMessage(err), event: e.type }, 'schemaops event listener threw');
        }
      }
    }
  }

  stepEvent(
    op: Operation,
    step: StepName,
    tenant: string | null,
    state: StepState,
    phase: 'apply' | 'compensate',
    started: number,
    error: unknown,
  ): void {
    const durationMs = performance.now() - started;
    const m = this.counts.steps[step];
    m.totalMs += durationMs;
    if (phase === 'apply') {
      if (state === 'succeeded') m.succeeded++;
      else m.failed++;
    } else if (state === 'compensated') m.compensated++;
    else m.compensationFailed++;
    this.report({
      type: 'step',
      operationId: op.id,
      project: op.project,
      step,
      tenant,
      state,
      phase,
      durationMs,
      error: error === null ? null : errorMessage(error),
    });
  }

  operationEvent(op: Operation, outcome: { status: OperationStatus; error: unknown }, started: number): void {
    const m = this.counts.operations;
    if (outcome.status === 'committed') m.committed++;
    else if (outcome.status === 'compensated') m.compensated++;
    else if (outcome.status === 'failed') m.failed++;
    else if (outcome.status === 'needs_repair') m.needsRepair++;
    const fields = {
      operationId: op.id,
      project: op.project,
      type: op.type,
      attempt: op.attemptCount,
    };
    if (outcome.status === 'committed')
      this.#log?.info({ ...fields, status: outcome.status }, 'schemaops operation committed');
    else {
      this.#log?.warn(
        { ...fields, status: outcome.status, err: errorMessage(outcome.error) },
        `schemaops operation ended ${outcome.status}`,
      );
    }
    this.report({
      type: 'operation',
      operationId: op.id,
      project: op.project,
      operationType: op.type,
      status: outcome.status,
      attempt: op.attemptCount,
      durationMs: performance.now() - started,
      error: outcome.error === null ? null : errorMessage(outcome.error),
    });
  }
}
