// The sync client of the device child processes (crash-child.ts, hydrate-child.ts and
// bench/client-load-child.ts): the business tables, the user id as its token (the test server's auth).
import { createSyncClient, type SyncClientOptionsInput } from '../../../src/client/index.js';
import { CLIENT_TABLES } from './schema.js';

/** A client of `user` over `db` talking to `baseUrl`; `opts` adds to or overrides the rest. */
export function childClient(
  db: SyncClientOptionsInput['writer'],
  baseUrl: string,
  user: string,
  opts: Partial<SyncClientOptionsInput> = {},
) {
  return createSyncClient({
    writer: db,
    baseUrl,
    token: user,
    schema: 'business',
    tables: CLIENT_TABLES,
    ...opts,
  });
}
