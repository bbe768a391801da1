import { Emitter } from '@x/core';
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

type SchemaOpsEventMap = { [E in SchemaOpsEventType]: Extract<SchemaOpsEvent, { type: E }> };

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
  readonly #events: Emitter<SchemaOpsEventMap>;
  readonly #log: Logger | undefined;

  constructor(log: Logger | undefined) {
    this.#log = log;
    this.#events = new Emitter<SchemaOpsEventMap>({
      onListenerError: (err, event) =>
        this.#log?.warn({ err: errorMessage(err), event }, 'schemaops event listener threw'),
    });
  }

  on<E extends SchemaOpsEventType>(event: E, listener: (e: SchemaOpsEventMap[E]) => void): () => void {
    return this.#events.on(event, listener);
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
    this.#events.emit(e.type, e as never);
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
