import { pipeline } from 'node:stream/promises';
import { from as copyFromQuery, to as copyToQuery } from 'pg-copy-streams';
import Cursor from 'pg-cursor';
import { DbxError, isDbxError } from '../errors.js';
import { txStorage } from '../tx.js';
import type { QueryOptions } from '../types.js';
import { callOptionsError, checkCallOptions, QUERY_OPTION_KEYS, STREAM_OPTION_KEYS } from './call-options.js';
import { destroyConnection, type ExecContext, type Lease, statementDone, wrapError } from './exec.js';
import type { Node } from './node.js';
import { type ClusterRuntime, leaseWriterRetrying, onWriter } from './runtime.js';
import { cancelledError, raceAbort, withTimeout } from './util.js';

function observe(
  ctx: ExecContext,
  node: Node,
  method: string,
  sql: string,
  started: number,
  rowCount: number,
) {
  node.queries++;
  statementDone(ctx, node, method, sql, started, () => rowCount);
}

/** `cluster.copyFrom`: `COPY ... FROM STDIN` fed from `source` on the writer. */
export function copyFrom(
  rt: ClusterRuntime,
  sql: string,
  source: AsyncIterable<string | Buffer> | NodeJS.ReadableStream,
  opts?: QueryOptions,
): Promise<number> {
  const bad = callOptionsError('copyFrom options', opts, QUERY_OPTION_KEYS);
  if (bad !== null) return Promise.reject(bad);
  const signal = opts?.signal;
  return onWriter(
    rt,
    'copyFrom',
    signal,
    async (lease) => {
      if (signal?.aborted) throw cancelledError(signal);
      const started = performance.now();
      const stream = lease.client.query(copyFromQuery(sql));
      try {
        await pipeline(source as AsyncIterable<string | Buffer>, stream, signal ? { signal } : {});
      } catch (e) {
        lease.discard = true;
        if (signal?.aborted) throw cancelledError(signal, e);
        throw wrapError(e, lease.node, 'copyFrom');
      }
      observe(rt.ctx, lease.node, 'copyFrom', sql, started, stream.rowCount);
      return stream.rowCount;
    },
    true,
  );
}

/** `cluster.copyTo`: the chunks of `COPY ... TO STDOUT` on the writer. */
export async function* copyTo(rt: ClusterRuntime, sql: string, opts?: QueryOptions): AsyncIterable<Buffer> {
  checkCallOptions('copyTo options', opts, QUERY_OPTION_KEYS);
  const signal = opts?.signal;
  rt.enter();
  try {
    const lease = await leaseWriterRetrying(rt, 'copyTo', signal);
    const started = performance.now();
    const stream = lease.client.query(copyToQuery(sql));
    const onAbort = () => stream.destroy(cancelledError(signal as AbortSignal));
    signal?.addEventListener('abort', onAbort, { once: true });
    let done = false;
    try {
      for await (const chunk of stream) yield chunk as Buffer;
      done = true;
      observe(rt.ctx, lease.node, 'copyTo', sql, started, stream.rowCount);
    } catch (e) {
      lease.discard = true;
      if (signal?.aborted) throw cancelledError(signal, e);
      throw wrapError(e, lease.node, 'copyTo');
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!done) {
        // Stopped mid-COPY: the connection is in an unknown protocol state.
        lease.discard = true;
        stream.destroy();
      }
      rt.leases.release(lease);
    }
  } finally {
    rt.leave();
  }
}

/** `cluster.stream`: rows through a server-side cursor, `batchSize` at a time. */
export async function* stream<R>(
  rt: ClusterRuntime,
  sql: string,
  params?: readonly unknown[],
  opts?: QueryOptions & { batchSize?: number },
): AsyncIterable<R> {
  checkCallOptions('stream options', opts, STREAM_OPTION_KEYS);
  const signal = opts?.signal;
  const batchSize = opts?.batchSize ?? 100;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) {
    throw new DbxError(
      'DBX_INVALID_OPTIONS',
      'invalid stream options: batchSize: expected a positive integer',
      {
        details: { key: 'batchSize' },
      },
    );
  }
  // Inside a runTx of this cluster, stream on the transaction's connection.
  const tx = txStorage.getStore();
  const inTx = tx && tx.owner === rt.owner && !tx.closed ? tx : undefined;
  rt.enter();
  try {
    // A transaction whose BEGIN is still deferred (runTx sends it with its first statement) sends
    // it now: the cursor uses the connection directly.
    if (inTx) await inTx.begun(signal);
    const lease: Lease = inTx ? inTx.lease : await leaseWriterRetrying(rt, 'stream', signal);
    const started = performance.now();
    const cursor = lease.client.query(new Cursor<R>(sql, params as unknown[] | undefined));
    let count = 0;
    let done = false;
    try {
      for (;;) {
        const rows = await raceAbort(cursor.read(batchSize), signal);
        if (rows.length === 0) break;
        count += rows.length;
        for (const r of rows) yield r;
      }
      done = true;
      observe(rt.ctx, lease.node, 'stream', sql, started, count);
    } catch (e) {
      if (!inTx) lease.discard = true;
      if (isDbxError(e)) throw e;
      throw wrapError(e, lease.node, 'stream');
    } finally {
      try {
        // Bounded: on a server that stopped answering, closing the cursor would wait forever.
        await withTimeout(cursor.close(), rt.ctx.cancelTimeoutMs, () => new Error('cursor close timed out'));
      } catch {
        lease.discard = true;
        destroyConnection(lease.client);
      }
      if (!done && signal?.aborted && !inTx) lease.discard = true;
      if (!inTx) rt.leases.release(lease);
    }
  } finally {
    rt.leave();
  }
}
