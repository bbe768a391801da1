/**
 * The oversync client's `writer` in a device's primary process. Each local transaction of the
 * client runs through dbproxy's `runExclusive`: alone on the primary's write coordinator (its own
 * BEGIN IMMEDIATE..COMMIT), in queue order with every write of the device's processes, and
 * published like them. The client also needs the writer connection itself, outside any
 * transaction (the `foreign_keys` pragma, and as the key of its one-client-per-file guard): that is
 * the connection dbproxy's `migrate` hook receives when this process becomes the primary.
 */
import type { DbProxy } from '@x/dbproxy';
import type { CoordinatorLike } from '@x/oversync/client';
import type { SqliteDatabase } from '@x/writecoordinator';

/** `database()` returns the writer connection captured in `migrate`, or null before this process was primary. */
export function syncWriter(proxy: DbProxy, database: () => SqliteDatabase | null): CoordinatorLike {
  return {
    options: {
      get database(): unknown {
        const db = database();
        if (db === null || proxy.role !== 'primary') throw new Error('this process is not the primary');
        return db;
      },
    },
    runExclusive: (fn, opts = {}) => proxy.runExclusive(fn, opts),
    submit: () => Promise.reject(new Error('the sync client only uses runExclusive')),
  };
}
