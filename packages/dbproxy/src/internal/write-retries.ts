/** One logical write until its deadline: local submit or send over the link, re-send, backoff. */
import { type Emitter, sleep } from '@x/core';
import { isWriteCoordinatorError } from '@x/writecoordinator';
import { type DbProxyError, isDbProxyError, wireError } from '../errors.js';
import type { ResolvedDbProxyOptions } from '../options.js';
import { METHOD_DB_WRITE, type WriteResultWire } from '../protocol.js';
import type { WriteOptions, WriteResult } from '../types.js';
import type { DeadlineQueue } from './deadline-queue.js';
import { LightSignal } from './light-signal.js';
import { type Link, LinkDownError } from './link.js';
import type { Primary } from './primary.js';
import { uuidv7 } from './uuidv7.js';
import type { ResolvedWrite } from './write-input.js';

const DEADLINE = Symbol('deadline');

/** Where a write can go right now, as the proxy sees it at each attempt. */
export interface WriteRoute {
  readonly options: Readonly<ResolvedDbProxyOptions>;
  /** This process's primary state, when it is the primary. */
  primary(): Primary | null;
  /** The link to the primary this process follows, if any. */
  link(): Link | null;
  closed(): boolean;
  closedError(): DbProxyError;
  /** Woken whenever the role, the link or the primary changes. */
  readonly stateChanged: Emitter<{ changed: undefined }>;
  readonly deadlines: DeadlineQueue;
  countRetry(): void;
}

/**
 * One logical write, from the caller to whoever is primary, until its deadline: submitted to the
 * local coordinator on the primary, else sent over the link and re-sent (same requestId) after a
 * lost link or a retryable error, with backoff. The deadline is watched here by one timer, checked
 * by the primary when the request arrives, and by the coordinator (while queued and right before
 * it runs the job). The outcome says whether the write may have been applied: `applied: 'unknown'`
 * once an attempt reached a primary and no answer came back; UNREACHABLE when none was reached.
 */
export async function writeWithRetries<T>(
  route: WriteRoute,
  write: ResolvedWrite,
  opts: WriteOptions,
): Promise<WriteResult<T>> {
  const o = route.options;
  const { method } = write;
  const requestId = opts.requestId ?? uuidv7();
  const timeoutMs =
    opts.timeoutMs ?? o.timeouts.perMethod[method] ?? (write.long ? o.timeouts.longMs : o.timeouts.defaultMs);
  const deadline = Date.now() + timeoutMs;

  // One signal for the whole logical write: the caller's and the deadline.
  const signal = new LightSignal();
  const deadlineTimer = route.deadlines.add(timeoutMs, () => signal.abort(DEADLINE));
  const onAbort = (): void => signal.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  // `unknown`: some attempt may have been applied (it reached a primary and no answer came back).
  // `attempted`: some attempt reached a primary at all; if none did, the outcome is UNREACHABLE.
  let unknown = false;
  let attempted = false;
  let attempt = 0;
  // Waits (off the hot path, so the signal may be a real one) end early when the proxy's state changes.
  const waitForChange = (ms: number): Promise<void> =>
    sleep(ms, {
      signal: signal.toAbortSignal(),
      wake: (wakeUp) => route.stateChanged.once('changed', wakeUp),
    });
  const backoff = (): Promise<void> => {
    const d = Math.min(o.retry.maxDelayMs, o.retry.initialDelayMs * 2 ** attempt++);
    return waitForChange(d * (0.5 + Math.random() / 2));
  };
  try {
    for (;;) {
      if (signal.aborted) throw signal.reason;
      const p = route.primary();
      if (p !== null) {
        if (!p.accepting)
          throw wireError('SHUTTING_DOWN', 'the proxy is closing', { applied: unknown ? 'unknown' : 'no' });
        attempted = true;
        const r = await p.submit(
          write,
          requestId,
          deadline,
          o.instanceId,
          signal.toAbortSignal(),
          opts.durability,
        );
        return r as WriteResult<T>;
      }
      if (route.closed()) throw route.closedError();
      const link = route.link();
      if (link === null || link.isDown) {
        // No primary right now (failover or startup): wait for one until the deadline.
        await waitForChange(timeoutMs);
        continue;
      }
      attempted = true;
      try {
        const a = link.auth;
        const r = (await link.call(
          METHOD_DB_WRITE,
          {
            meta: {
              epoch: a.epoch,
              dbPath: a.dbPath,
              token: a.token,
              requestId,
              sourceInstanceId: o.instanceId,
              deadline,
            },
            method,
            params: write.wire,
            ...(opts.durability === undefined ? {} : { durability: opts.durability }),
          },
          signal,
        )) as WriteResultWire;
        return r as WriteResult<T>;
      } catch (e) {
        if (e instanceof LinkDownError) {
          unknown ||= e.sent;
          route.countRetry();
          continue; // re-send, same requestId, to whoever is primary next
        }
        if (
          isDbProxyError(e) &&
          e.retryable &&
          e.code !== 'DBPROXY_EXPIRED' &&
          e.code !== 'DBPROXY_TIMEOUT'
        ) {
          if (e.applied !== 'no') unknown = true;
          route.countRetry();
          if (e.code === 'DBPROXY_WRONG_PRIMARY') link.markDown('refused as wrong primary');
          await backoff();
          continue;
        }
        // Aborted (deadline or caller) while the request was out: it may still be applied.
        if (signal.aborted && e === signal.reason) unknown = true;
        throw e;
      }
    }
  } catch (e) {
    if (e === DEADLINE || (signal.aborted && signal.reason === DEADLINE && !opts.signal?.aborted)) {
      if (!attempted) {
        throw wireError('UNREACHABLE', `no primary answered within ${timeoutMs} ms; ${method} was not sent`, {
          applied: 'no',
          details: { method, requestId, timeoutMs },
        });
      }
      throw wireError('TIMEOUT', `${method} did not complete within ${timeoutMs} ms`, {
        applied: unknown ? 'unknown' : 'no',
        details: { method, requestId, timeoutMs },
      });
    }
    if (e === undefined && opts.signal?.aborted) throw opts.signal.reason;
    if (isWriteCoordinatorError(e) && e.code === 'WRITECOORDINATOR_ABORTED') {
      throw opts.signal?.aborted ? opts.signal.reason : e;
    }
    throw e;
  } finally {
    deadlineTimer.cancel();
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
