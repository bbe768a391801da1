import { sleep, throwIfAborted } from '@x/core';
import pg from 'pg';

/** Runs `fn` with a fresh connection to `url`, always closing it. */
export async function withClient<T>(
  url: string,
  fn: (client: pg.Client) => Promise<T>,
  opts: { signal?: AbortSignal | undefined; connectTimeoutMs?: number } = {},
): Promise<T> {
  throwIfAborted(opts.signal);
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
  });
  client.on('error', () => undefined);
  const onAbort = () => {
    void client.end().catch(() => undefined);
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await client.connect();
    return await fn(client);
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
  }
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Replaces the database of a postgres:// URL. */
export function urlWithDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}

/** Polls `check` every `intervalMs` until it returns true or `timeoutMs` passes. */
export async function pollUntil(
  check: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; signal?: AbortSignal | undefined; onTimeout: () => Error },
): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    throwIfAborted(opts.signal);
    if (await check()) return;
    if (Date.now() >= deadline) throw opts.onTimeout();
    await sleep(opts.intervalMs ?? 20, { signal: opts.signal });
  }
}
