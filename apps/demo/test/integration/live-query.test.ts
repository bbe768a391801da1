/**
 * Live queries on a device whose SQLite file is shared through dbproxy (issue #20): the primary
 * runs the sync client through `runExclusive` and watches with `client.watch()`; a secondary,
 * with no sync client, watches with `watchQuery(proxy, …)` on its own read-only connection.
 * Writes forwarded by the secondary and bundles pulled by the primary's client reach both.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createDbProxy, type DbProxy } from '@x/dbproxy';
import { createSyncClient, type SyncClient, watchQuery } from '@x/oversync/client';
import { createTestDatabase, type TestDatabase, tempDir } from '@x/testkit';
import type { SqliteDatabase } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { businessWrites, DEFAULT_SQLITE_DDL } from '../../src/device-schema.js';
import { signJwt } from '../../src/jwt.js';
import { clientTables, defaultProfile } from '../../src/profiles.js';
import { type DemoServer, startDemoServer } from '../../src/server.js';
import { syncWriter } from '../../src/sync-writer.js';

const SECRET = 'live-query-secret';
const TENANT = 'acme';
const ITEMS = 'SELECT title FROM items ORDER BY title';

let tdb: TestDatabase;
let server: DemoServer;
let dir: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  tdb = await createTestDatabase({ prefix: 'demo_live' });
  server = await startDemoServer({ databaseUrl: tdb.url, port: 0, profile: defaultProfile, secret: SECRET });
  dir = await tempDir('demo-live-');
});
afterAll(async () => {
  await server?.close();
  await tdb?.drop();
  await dir?.cleanup();
});

/** The results a callback watch reported, and a wait for the first that satisfies `pred`. */
function results() {
  const seen: string[][] = [];
  let wake: () => void = () => {};
  return {
    seen,
    onResult: (rows: Array<{ title: string }>) => {
      seen.push(rows.map((r) => r.title));
      wake();
    },
    async until(what: string, want: string[], ms = 15_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (JSON.stringify(seen.at(-1)) !== JSON.stringify(want)) {
        const left = deadline - Date.now();
        if (left <= 0)
          throw new Error(`${what}: last result ${JSON.stringify(seen.at(-1))}, not ${JSON.stringify(want)}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    },
  };
}

const clientOf = (writer: Parameters<typeof createSyncClient>[0]['writer'], user: string, did: string) =>
  createSyncClient({
    writer,
    baseUrl: server.url,
    token: () => signJwt(SECRET, { sub: user, did, ttlSeconds: 300 }),
    schema: TENANT,
    tables: clientTables(defaultProfile),
  });

describe('live queries on a dbproxy device', () => {
  it('reach the primary (client.watch) and a secondary (watchQuery) for forwarded writes and pulls', async () => {
    const user = `live-${randomUUID().slice(0, 8)}`;
    let writerDb: SqliteDatabase | null = null;
    const proxyOf = (instanceId: string): DbProxy =>
      createDbProxy({
        databasePath: join(dir.path, 'device.db'),
        runtimeDir: join(dir.path, 'run'),
        instanceId,
        writes: businessWrites(),
        migrate: (db) => {
          db.exec(DEFAULT_SQLITE_DDL);
          writerDb = db;
        },
      });
    const primary = proxyOf('primary');
    await primary.start();
    const secondary = proxyOf('secondary');
    await secondary.start();
    expect([primary.role, secondary.role]).toEqual(['primary', 'secondary']);
    let client: SyncClient | undefined;
    const other = new Database(join(dir.path, 'other.db'));
    other.exec(DEFAULT_SQLITE_DDL);
    const otherClient = clientOf(other, user, 'other');
    const stops: Array<() => void> = [];
    try {
      client = clientOf(
        syncWriter(primary, () => writerDb),
        user,
        'device',
      );
      await client.open();
      await client.attach(user);
      const inPrimary = results();
      const inSecondary = results();
      stops.push(client.watch(ITEMS, [], { onResult: inPrimary.onResult }));
      stops.push(watchQuery(secondary, ITEMS, [], { onResult: inSecondary.onResult }));
      await inPrimary.until('primary, first result', []);
      await inSecondary.until('secondary, first result', []);

      // writes forwarded by the secondary: run on the primary's writer, published to every process
      const list = randomUUID();
      await secondary.write('list.create', { id: list, name: 'groceries' });
      await secondary.write('item.put', { id: randomUUID(), list_id: list, title: 'milk' });
      await inPrimary.until('primary, forwarded write', ['milk']);
      await inSecondary.until('secondary, forwarded write', ['milk']);
      // the list write changed no result of the items query: nothing was reported for it
      expect(inPrimary.seen).toEqual([[], ['milk']]);
      expect(inSecondary.seen).toEqual([[], ['milk']]);

      // another device's bundle, pulled by the primary's client through runExclusive
      await client.sync();
      await otherClient.open();
      await otherClient.attach(user);
      other.prepare(`INSERT INTO items (id, list_id, title) VALUES (?, ?, 'bread')`).run(randomUUID(), list);
      await otherClient.sync();
      await client.sync();
      await inPrimary.until('primary, pulled bundle', ['bread', 'milk']);
      await inSecondary.until('secondary, pulled bundle', ['bread', 'milk']);
    } finally {
      for (const stop of stops) stop();
      await client?.close();
      await otherClient.close();
      other.close();
      await secondary.close();
      await primary.close();
    }
  });
});
