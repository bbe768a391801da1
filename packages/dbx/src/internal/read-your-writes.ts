import { AsyncLocalStorage } from 'node:async_hooks';
import type { Lease } from './exec.js';
import { formatLsn, maxLsn, parseLsn } from './lsn.js';

/** A read-your-writes scope: the newest write LSN of this session. */
export interface Session {
  token: bigint | null;
  /** A write happened but its LSN could not be read: reads go to the primary. */
  unknownWrite: boolean;
}

/** Read-your-writes sessions: each remembers the primary's WAL position after its writes. */
export class Sessions {
  readonly #storage = new AsyncLocalStorage<Session>();

  /** The session of the calling async context, if any. */
  current(): Session | undefined {
    return this.#storage.getStore();
  }

  /** After a write inside a session, remember the primary's WAL insert position as the session token. */
  async recordWrite(lease: Lease): Promise<void> {
    const s = this.#storage.getStore();
    if (!s) return;
    try {
      const r = await lease.client.query<{ lsn: string }>('select pg_current_wal_insert_lsn()::text as lsn');
      const lsn = r.rows[0]?.lsn;
      if (lsn) s.token = maxLsn(s.token, parseLsn(lsn));
      else s.unknownWrite = true;
    } catch {
      s.unknownWrite = true;
    }
  }

  run<T>(fn: () => Promise<T>, opts?: { token?: string | null }): Promise<T> {
    const seed = opts?.token ? parseLsn(opts.token) : null;
    const outer = this.#storage.getStore();
    if (outer) {
      outer.token = maxLsn(outer.token, seed);
      return fn();
    }
    return this.#storage.run({ token: seed, unknownWrite: false }, fn);
  }

  writeToken(): string | null {
    const s = this.#storage.getStore();
    return s?.token != null ? formatLsn(s.token) : null;
  }
}
