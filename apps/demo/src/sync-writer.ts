/**
 * Lets the oversync client run its local transactions through the coordinator that dbproxy owns
 * in the primary process. dbproxy does not expose its coordinator, so the client's transaction
 * becomes a named write (`sync.exclusive`) submitted to it: the job runs on the primary's writer
 * connection, inside the coordinator's group commit, like every other write of the device.
 * The function itself never crosses a process: the handler finds it in this process's table,
 * and refuses (nothing applied) if the write ever lands on another process.
 */
import { randomUUID } from 'node:crypto';
import type { DbProxy, WriteMethod } from '@x/dbproxy';
import type { CoordinatorLike } from '@x/oversync/client';
import type { SqliteDatabase } from '@x/writecoordinator';
import { z } from 'zod';
import { write as defineWrite } from './device-schema.js';

export const SYNC_TX_METHOD = 'sync.exclusive';

interface Pending {
  fn: (db: SqliteDatabase) => unknown;
  result?: unknown;
  error?: unknown;
  ran: boolean;
}

export interface SyncWriterBridge {
  /** Register this with dbproxy's `writes` (every process, so the registry is identical). */
  readonly write: WriteMethod;
  /** The writer connection captured by dbproxy's `migrate` hook when this process became primary. */
  setDatabase(db: SqliteDatabase): void;
  /** A coordinator-shaped writer for `createSyncClient({ writer })`; valid while this process is primary. */
  coordinator(proxy: DbProxy): CoordinatorLike;
  /** Local transactions run so far. */
  readonly transactions: number;
}

export function createSyncWriterBridge(): SyncWriterBridge {
  const pending = new Map<string, Pending>();
  let database: SqliteDatabase | null = null;
  let transactions = 0;
  const write = defineWrite({
    params: z.object({ token: z.string().uuid() }),
    long: true,
    handler: (db: SqliteDatabase, p) => {
      const job = pending.get(p.token);
      if (job === undefined) throw new Error('sync transaction submitted from another process');
      job.ran = true;
      try {
        job.result = job.fn(db);
      } catch (e) {
        job.error = e;
        throw e;
      }
      return null; // the real result stays in this process (it need not be JSON)
    },
  });
  return {
    write,
    get transactions() {
      return transactions;
    },
    setDatabase(db) {
      database = db;
    },
    coordinator(proxy) {
      const options = {
        get database(): unknown {
          if (database === null) throw new Error('this process is not the primary');
          return database;
        },
      };
      return {
        options,
        async runExclusive<T>(
          fn: (db: never) => T,
          opts: { signal?: AbortSignal; durability?: 'normal' | 'full' } = {},
        ) {
          const token = randomUUID();
          const job: Pending = { fn: fn as (db: SqliteDatabase) => unknown, ran: false };
          pending.set(token, job);
          try {
            await proxy.write(
              SYNC_TX_METHOD,
              { token },
              {
                requestId: token,
                ...(opts.signal ? { signal: opts.signal } : {}),
                ...(opts.durability ? { durability: opts.durability } : {}),
              },
            );
            transactions++;
            return { value: job.result as T };
          } catch (e) {
            // Rethrow the client's own error (e.g. a constraint it expects), not the wrapper.
            throw job.error !== undefined ? job.error : e;
          } finally {
            pending.delete(token);
          }
        },
        submit: async () => {
          throw new Error('the sync client only uses runExclusive');
        },
      };
    },
  };
}
