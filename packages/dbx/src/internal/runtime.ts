import { pgErrorCode } from '../errors.js';
import type { ExecContext, Lease } from './exec.js';
import type { Topology } from './health.js';
import type { Leases } from './leases.js';
import type { Sessions } from './read-your-writes.js';
import { canRetryWrite, type Retrier } from './retry.js';

/**
 * What the cluster's operation modules (transactions, COPY and streaming) share with the cluster:
 * its parts, and `enter`/`leave` around every operation (refusing calls after close, counting
 * in-flight work for the drain).
 */
export interface ClusterRuntime {
  /** The cluster: a transaction belongs to it (`TxImpl.owner`). */
  readonly owner: object;
  readonly ctx: ExecContext;
  readonly maxAttempts: number;
  readonly topology: Topology;
  readonly leases: Leases;
  readonly retrier: Retrier;
  readonly sessions: Sessions;
  enter(): void;
  leave(): void;
}

/** Leases the writer, retrying only the safe cases (nothing sent, or a standby refused). */
export function leaseWriterRetrying(
  rt: ClusterRuntime,
  op: string,
  signal: AbortSignal | undefined,
): Promise<Lease> {
  return rt.retrier.run(op, signal, rt.maxAttempts, canRetryWrite, () => rt.leases.leaseWriter(signal));
}

/** Runs `fn` on a leased writer connection, retrying only the safe cases. */
export async function onWriter<T>(
  rt: ClusterRuntime,
  op: string,
  signal: AbortSignal | undefined,
  fn: (lease: Lease) => Promise<T>,
  recordWrite: boolean,
  prior?: { error: unknown },
): Promise<T> {
  rt.enter();
  try {
    return await rt.retrier.run(
      op,
      signal,
      rt.maxAttempts,
      canRetryWrite,
      () => writeAttempt(rt, signal, fn, recordWrite),
      prior,
    );
  } finally {
    rt.leave();
  }
}

async function writeAttempt<T>(
  rt: ClusterRuntime,
  signal: AbortSignal | undefined,
  fn: (lease: Lease) => Promise<T>,
  recordWrite: boolean,
): Promise<T> {
  const lease = await rt.leases.leaseWriter(signal);
  try {
    const value = await fn(lease);
    if (recordWrite && rt.sessions.current() !== undefined) await rt.sessions.recordWrite(lease);
    return value;
  } catch (e) {
    if (pgErrorCode(e) === '25006') rt.topology.requestCheckAll();
    throw e;
  } finally {
    rt.leases.release(lease);
  }
}
