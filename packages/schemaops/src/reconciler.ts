import { errorMessage, isSchemaOpsError } from './errors.js';
import type { Ledger } from './internal/ledger.js';
import type { Logger, ResolvedReconcilerOptions } from './options.js';
import type { BackgroundReconciler, Operation, ReconcileOptions, SchemaOpsEvent } from './types.js';

type ReconcileEvent = Extract<SchemaOpsEvent, { type: 'reconcile' }>;

export interface ReconcilerDeps {
  readonly ledger: Ledger;
  readonly logger: Logger | undefined;
  reconcile(id: string, opts: ReconcileOptions): Promise<Operation>;
  report(e: ReconcileEvent): void;
  onStop(r: BackgroundReconciler): void;
}

/**
 * Backoff before attempt `attempt + 1`: min(max, base * 2^(attempt-1)), jittered to [50%, 150%).
 * What the background reconciler waits after a failed repair (recorded as the operation's
 * `nextAttemptAt`).
 *
 * @example
 * ```ts
 * import { DEFAULT_RECONCILER_BASE_DELAY_MS, DEFAULT_RECONCILER_MAX_DELAY_MS, reconcileBackoffMs } from '@x/schemaops';
 *
 * for (const attempt of [1, 2, 3, 8]) {
 *   console.log(attempt, reconcileBackoffMs(attempt, DEFAULT_RECONCILER_BASE_DELAY_MS, DEFAULT_RECONCILER_MAX_DELAY_MS));
 * }
 * // 1 in [500, 1500), 2 in [1000, 3000), 3 in [2000, 6000), 8 in [30000, 90000) (capped at 60000 before jitter)
 * ```
 */
export function reconcileBackoffMs(attempt: number, baseDelayMs: number, maxDelayMs: number): number {
  const cap = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(cap * (0.5 + Math.random()));
}

/**
 * The background reconciler: every `intervalMs`, the operations left `applying` / `compensating` by a
 * dead process and those `needs_repair` are resumed through `reconcile` (same row, from the first
 * unfinished step). A failed repair is retried after an exponential backoff recorded in the ledger
 * (`next_attempt_at`, so every process honours it) until `maxAttempts`; each outcome is reported as a
 * `reconcile` event, in metrics and on `x:schemaops:reconcile`. Operations whose project lock is held
 * (still running) are skipped without spending an attempt.
 */
export function startBackgroundReconciler(
  deps: ReconcilerDeps,
  o: Readonly<ResolvedReconcilerOptions>,
): BackgroundReconciler {
  const stopController = new AbortController();
  let timer: NodeJS.Timeout | null = null;
  let current: Promise<unknown> | null = null;
  let stopped: Promise<void> | null = null;

  const one = async (row: { id: string; project: string; attemptCount: number }): Promise<ReconcileEvent> => {
    const base = { type: 'reconcile' as const, operationId: row.id, project: row.project };
    try {
      // No signal: stopping the reconciler lets a repair in flight finish rather than compensate it.
      const op = await deps.reconcile(row.id, { lockWaitMs: o.lockWaitMs });
      if (op.nextAttemptAt !== null) await deps.ledger.setNextAttempt(row.id, null);
      return {
        ...base,
        outcome:
          op.status === 'committed' ? 'repaired' : op.status === 'compensated' ? 'compensated' : 'failed',
        status: op.status,
        attempt: op.attemptCount,
        error: op.status === 'committed' ? null : op.lastError,
        nextAttemptAt: null,
      };
    } catch (e) {
      if (isSchemaOpsError(e, 'SCHEMAOPS_LOCKED')) {
        return {
          ...base,
          outcome: 'locked',
          status: null,
          attempt: row.attemptCount,
          error: null,
          nextAttemptAt: null,
        };
      }
      const after = await deps.ledger.summary(row.id).catch(() => undefined);
      const attempt = after?.attemptCount ?? row.attemptCount + 1;
      const unknownType = isSchemaOpsError(e, 'SCHEMAOPS_UNKNOWN_OPERATION');
      const exhausted = attempt >= o.maxAttempts;
      const next =
        exhausted && !unknownType
          ? null
          : new Date(
              Date.now() +
                (unknownType ? o.maxDelayMs : reconcileBackoffMs(attempt, o.baseDelayMs, o.maxDelayMs)),
            );
      await deps.ledger.setNextAttempt(row.id, next).catch(() => {});
      return {
        ...base,
        outcome: unknownType ? 'skipped' : exhausted ? 'exhausted' : 'failed',
        status: after?.status ?? null,
        attempt,
        error: errorMessage(e),
        nextAttemptAt: next,
      };
    }
  };

  const tick = async (opts: { signal?: AbortSignal } = {}): Promise<ReconcileEvent[]> => {
    const signal = opts.signal
      ? AbortSignal.any([opts.signal, stopController.signal])
      : stopController.signal;
    const rows = await deps.ledger.due(o.project, o.maxAttempts, o.batchSize, signal);
    const out: ReconcileEvent[] = [];
    for (const row of rows) {
      if (signal.aborted) break;
      const event = await one(row);
      deps.report(event);
      out.push(event);
    }
    return out;
  };

  const schedule = () => {
    if (stopController.signal.aborted) return;
    timer = setTimeout(() => {
      timer = null;
      const p = tick().catch((e: unknown) => {
        if (!stopController.signal.aborted)
          deps.logger?.warn({ err: errorMessage(e) }, 'schemaops reconciler pass failed');
      });
      current = p;
      void p.finally(() => {
        if (current === p) current = null;
        schedule();
      });
    }, o.intervalMs);
    timer.unref?.();
  };

  const self: BackgroundReconciler = {
    get running() {
      return !stopController.signal.aborted;
    },
    tick: (opts) => tick(opts ?? {}),
    stop(): Promise<void> {
      stopped ??= (async () => {
        stopController.abort(new Error('reconciler stopped'));
        if (timer) clearTimeout(timer);
        timer = null;
        await current?.catch(() => {});
        deps.onStop(self);
      })();
      return stopped;
    },
    [Symbol.asyncDispose]: () => self.stop(),
  };
  schedule();
  return self;
}
