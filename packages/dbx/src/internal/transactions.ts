import type pg from 'pg';
import { DbxError, isSerializationFailure, pgErrorCode } from '../errors.js';
import { beginStatement, TxImpl, txStorage, validateTxOptions } from '../tx.js';
import type { Tx, TxHandle, TxOptions } from '../types.js';
import { type Lease, wasNotSent } from './exec.js';
import { type ClusterRuntime, leaseWriterRetrying } from './runtime.js';

async function rollbackQuietly(tx: TxImpl): Promise<void> {
  if (tx.lease.discard) return; // the connection is dropped: the server rolls back
  try {
    await tx.control('rollback');
  } catch {
    tx.lease.discard = true;
  }
}

async function commit(tx: TxImpl): Promise<void> {
  const res = await tx.control('commit');
  const command = (Array.isArray(res) ? res[0] : (res as pg.QueryResult))?.command;
  if (command === 'ROLLBACK') {
    // COMMIT of a transaction that had an error silently rolls back; never report that as success.
    throw new DbxError(
      'DBX_QUERY_FAILED',
      'the transaction was aborted by an earlier error (a caught statement failure); COMMIT rolled it back',
      { details: { node: tx.lease.node.name, method: 'commit', sqlState: '25P02' } },
    );
  }
}

/** `cluster.runTx`: a transaction on the writer, retried whole on serialization failures. */
export async function runTx<T>(rt: ClusterRuntime, fn: (tx: Tx) => Promise<T>, opts?: TxOptions): Promise<T> {
  validateTxOptions(opts);
  const outer = txStorage.getStore();
  if (outer && outer.owner === rt.owner && !outer.closed) return outer.runTx(fn, opts);
  rt.enter();
  try {
    const signal = opts?.signal;
    const maxAttempts = opts?.maxAttempts ?? rt.maxAttempts;
    const canRetry = (e: unknown) => {
      if (isSerializationFailure(e) || wasNotSent(e)) return true;
      // 25006 in a transaction we made read-only is the caller's mistake, not a standby answering.
      if (pgErrorCode(e) !== '25006' || opts?.readOnly) return false;
      rt.topology.requestCheckAll();
      return true;
    };
    return await rt.retrier.run('runTx', signal, maxAttempts, canRetry, async () => {
      const lease = await rt.leases.leaseWriter(signal);
      // BEGIN goes with the callback's first statement (TxImpl#run); a failure of it is safe to
      // retry, as nothing of the transaction can have committed.
      const tx = new TxImpl(rt.owner, rt.ctx, lease, signal, beginStatement(opts));
      try {
        let result: T;
        try {
          result = await txStorage.run(tx, () => fn(tx));
        } catch (e) {
          tx.markClosed();
          await rollbackQuietly(tx);
          throw e;
        }
        tx.markClosed();
        await commit(tx);
        if (!opts?.readOnly) await rt.sessions.recordWrite(lease);
        return result;
      } finally {
        tx.markClosed();
        rt.leases.release(lease);
      }
    });
  } finally {
    rt.leave();
  }
}

/** `cluster.begin`: a transaction the caller ends with `commit()` or `rollback()`. */
export async function begin(rt: ClusterRuntime, opts?: TxOptions): Promise<TxHandle> {
  validateTxOptions(opts);
  rt.enter();
  let lease: Lease | undefined;
  try {
    lease = await leaseWriterRetrying(rt, 'begin', opts?.signal);
    const tx = new TxImpl(rt.owner, rt.ctx, lease, opts?.signal);
    await tx.control(beginStatement(opts));
    return handle(rt, tx, opts);
  } catch (e) {
    if (lease) rt.leases.release(lease);
    rt.leave();
    throw e;
  }
}

function handle(rt: ClusterRuntime, tx: TxImpl, opts: TxOptions | undefined): TxHandle {
  let finished = false;
  const finish = async (how: 'commit' | 'rollback') => {
    if (finished) throw new DbxError('DBX_TX_CLOSED', 'the transaction is already committed or rolled back');
    finished = true;
    tx.markClosed();
    try {
      if (how === 'commit') {
        try {
          await commit(tx);
        } catch (e) {
          await rollbackQuietly(tx);
          throw e;
        }
        if (!opts?.readOnly) await rt.sessions.recordWrite(tx.lease);
      } else {
        // Never fails: if the connection is gone, the server has rolled back already.
        await rollbackQuietly(tx);
      }
    } finally {
      rt.leases.release(tx.lease);
      rt.leave();
    }
  };
  const h: TxHandle = {
    query: (sql, params, o) => tx.query(sql, params, o),
    queryRow: (sql, params, o) => tx.queryRow(sql, params, o),
    exec: (sql, params, o) => tx.exec(sql, params, o),
    runTx: (fn, o) => tx.runTx(fn, o),
    commit: () => finish('commit'),
    rollback: () => finish('rollback'),
    // `await using tx = await cluster.begin()`: rolled back unless committed.
    [Symbol.asyncDispose]: () => (finished ? Promise.resolve() : finish('rollback')),
  };
  return h;
}
