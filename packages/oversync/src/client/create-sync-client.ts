import { SyncClientImpl } from './client.js';
import { parseOptions, type SyncClientOptionsInput } from './options.js';
import type { SyncClient } from './sync-client.js';

/**
 * Creates a sync client over the device's SQLite database. The options are checked here
 * (OVERSYNC_CLIENT_INVALID_OPTIONS); no I/O happens until `open()`, which installs the client's
 * tables and triggers, and `attach(userId)`, which binds the database to the user's scope on the
 * server. Then `sync()` pushes local changes and pulls the server's, or `start()` keeps doing so in
 * the background.
 *
 * @example
 * ```ts
 * import { createSyncClient } from '@x/oversync/client';
 * import Database from 'better-sqlite3';
 *
 * const db = new Database('notes.db');
 * db.exec(`CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL)`);
 * const client = createSyncClient({
 *   writer: db, // or a write coordinator
 *   baseUrl: 'https://sync.example.com',
 *   token: () => 'token-of-ann', // sent as Authorization: Bearer …
 *   schema: 'business', // the server schema of the rows
 *   tables: [{ table: 'users', syncKeyColumns: ['id'] }],
 * });
 * await client.open();
 * await client.attach('user-123');
 * db.prepare('INSERT INTO users (id, name) VALUES (?, ?)').run(crypto.randomUUID(), 'Ann');
 * const report = await client.sync(); // push, then pull to the server's stable point
 * console.log('pushed', report.push.rowCount, 'rows; pull', report.pull.outcome);
 * await client.close(); // does not close the database
 * db.close();
 * ```
 */
export function createSyncClient(options: SyncClientOptionsInput): SyncClient {
  return new SyncClientImpl(parseOptions(options));
}
