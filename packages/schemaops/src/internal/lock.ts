import type { Cluster } from '@x/dbx';
import { errorMessage, SchemaOpsError } from '../errors.js';

/**
 * A per-project PostgreSQL advisory lock held at session level on a dedicated connection for the whole
 * operation. Session level (not a transaction-level lock) because an operation spans many
 * transactions on many connections; a dedicated connection because the lock lives and dies with it:
 * if the process is killed, the server ends the session and the lock is released at once, so a
 * reconciler can take over. If the connection breaks while the operation runs, `signal` aborts with
 * SCHEMAOPS_LOCK_LOST and the operation stops at its next step boundary (another process may
 * already hold the lock).
 */
export interface ProjectLock {
  readonly signal: AbortSignal;
  readonly waitedMs: number;
  release(): Promise<void>;
}

/** The two advisory-lock key texts of a project (hashed with `hashtext` on the server). */
export function lockKeys(ledgerSchema: string, project: string): [string, string] {
  return [`schemaops:${ledgerSchema}`, project];
}

function isLockTimeout(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === '55P03';
}

export async function acquireProjectLock(
  cluster: Cluster,
  ledgerSchema: string,
  project: string,
  waitMs: number,
  signal: AbortSignal | undefined,
): Promise<ProjectLock> {
  signal?.throwIfAborted();
  const started = performance.now();
  const client: Awaited<ReturnType<Cluster['connect']>> = await cluster.connect(signal ? { signal } : {});
  const lost = new AbortController();
  const onError = (e: Error) => {
    lost.abort(
      new SchemaOpsError('SCHEMAOPS_LOCK_LOST', `the connection holding the lock of project was lost`, {
        retryable: true,
        cause: e,
        details: { project },
      }),
    );
  };
  const onEnd = () => onError(new Error('the lock connection ended'));
  client.on('error', onError);
  client.on('end', onEnd);
  const [k1, k2] = lockKeys(ledgerSchema, project);
  let destroyed = false;
  const destroy = (why: unknown) => {
    if (destroyed) return;
    destroyed = true;
    client.off('end', onEnd);
    // The 'error' listener stays: a late error from the dying socket must not become an uncaught exception.
    client.release(why instanceof Error ? why : new Error(errorMessage(why)));
  };
  // An abort while waiting ends the session, which ends the wait (pg queries cannot be cancelled otherwise).
  const onAbort = () => destroy(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let ok: boolean;
    if (waitMs === 0) {
      const r = await client.query<{ ok: boolean }>(
        'select pg_try_advisory_lock(hashtext($1), hashtext($2)) as ok',
        [k1, k2],
      );
      ok = r.rows[0]?.ok === true;
    } else {
      await client.query(`select set_config('lock_timeout', $1, false)`, [`${waitMs}ms`]);
      try {
        await client.query('select pg_advisory_lock(hashtext($1), hashtext($2))', [k1, k2]);
        ok = true;
      } catch (e) {
        if (!isLockTimeout(e)) throw e;
        ok = false;
      }
      if (ok) await client.query(`select set_config('lock_timeout', '0', false)`);
    }
    if (!ok) {
      throw new SchemaOpsError('SCHEMAOPS_LOCKED', 'another operation holds the lock of this project', {
        retryable: true,
        details: { project, waitMs },
      });
    }
  } catch (e) {
    signal?.removeEventListener('abort', onAbort);
    const aborted = signal?.aborted === true;
    destroy(e);
    if (aborted) throw signal?.reason;
    throw e;
  }
  signal?.removeEventListener('abort', onAbort);
  let released: Promise<void> | null = null;
  return {
    signal: lost.signal,
    waitedMs: performance.now() - started,
    release(): Promise<void> {
      released ??= (async () => {
        if (destroyed) return;
        try {
          if (!lost.signal.aborted) {
            await client.query('select pg_advisory_unlock(hashtext($1), hashtext($2))', [k1, k2]);
            destroyed = true;
            client.off('error', onError);
            client.off('end', onEnd);
            client.release();
            return;
          }
          destroy(lost.signal.reason);
        } catch (e) {
          // Ending the session releases the lock too.
          destroy(e);
        }
      })();
      return released;
    },
  };
}
