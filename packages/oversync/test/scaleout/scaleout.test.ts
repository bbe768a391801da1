/**
 * Scale-out (issue #19, point 5): three `oversync-server` processes (the package's command, dist/)
 * on one PostgreSQL database, each configured with a streaming replica of it (`--replica-url`),
 * and clients whose every request goes to a random one of the three (the client's `fetch` option
 * is the router). Pushes (several chunks per session), pulls, snapshot hydration and `rebuild()`
 * (several pages per session) and watch all cross processes; at the end every device holds the
 * server's rows, and the replica has replayed them.
 *
 * The routing is seeded: OVERSYNC_SCALEOUT_SEED=<n> replays the routing and the writes (not the
 * timing). The watch checks wait on events, never on sleeps.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { createSyncClient, type SyncClient } from '@x/oversync/client';
import { createTestDatabase, type TestDatabase, tempDir, waitFor } from '@x/testkit';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../convergence/prng.js';
import { bundleEvents } from '../server/fixture.js';
import {
  hs256Token,
  SECRET,
  type ServerProcess,
  startServer,
  TABLES,
  TABLES_SQL,
} from '../server-cli/harness.js';

const SEED = Number(process.env.OVERSYNC_SCALEOUT_SEED ?? Math.floor(Math.random() * 2 ** 31));
const SERVERS = 3;
const OPS_PER_DEVICE = 30;
const USER = `scaleout-${randomUUID().slice(0, 8)}`;

let tdb: TestDatabase;
let admin: pg.Client;
let servers: ServerProcess[] = [];
let dir: Awaited<ReturnType<typeof tempDir>>;
let token: string;
const rng = mulberry32(SEED);
/** Requests served, by server index and route kind. */
const served = Array.from({ length: SERVERS }, () => new Map<string, number>());

const routeKind = (path: string, method: string): string => {
  if (path === '/sync/push-sessions') return 'push-create';
  if (path.endsWith('/chunks')) return 'push-chunk';
  if (path.endsWith('/commit')) return 'push-commit';
  if (path === '/sync/pull') return 'pull';
  if (path === '/sync/watch') return 'watch';
  if (path.startsWith('/sync/snapshot-sessions') && method === 'POST') return 'snapshot-create';
  if (path.startsWith('/sync/snapshot-sessions') && method === 'GET') return 'snapshot-page';
  return path.split('/').slice(0, 3).join('/');
};

/** Where a device's requests go: a random process each, never `exclude` when set. */
type Router = { exclude?: number | undefined };
/** A `fetch` for createSyncClient that sends each request to a random server process. */
function randomRouter(router: Router): (url: string, init: RequestInit) => Promise<Response> {
  return (url, init) => {
    let i = Math.floor(rng.next() * SERVERS);
    if (router.exclude !== undefined && i === router.exclude)
      i = (i + 1 + Math.floor(rng.next() * (SERVERS - 1))) % SERVERS;
    const u = new URL(url);
    u.host = new URL(servers[i]!.url).host;
    const kind = routeKind(u.pathname, init.method ?? 'GET');
    served[i]!.set(kind, (served[i]!.get(kind) ?? 0) + 1);
    return fetch(u, init);
  };
}

type Device = { name: string; db: Database.Database; client: SyncClient; router: Router };
const devices: Device[] = [];
async function device(name: string, extra: Partial<Parameters<typeof createSyncClient>[0]> = {}) {
  const db = new Database(join(dir.path, `${name}.db`));
  db.exec(`CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS posts (id TEXT PRIMARY KEY NOT NULL, title TEXT NOT NULL,
      author_id TEXT REFERENCES users(id) DEFERRABLE INITIALLY DEFERRED);`);
  const router: Router = {};
  const client = createSyncClient({
    writer: db,
    baseUrl: servers[0]!.url,
    token,
    schema: 'business',
    tables: [
      { table: 'users', syncKeyColumns: ['id'] },
      { table: 'posts', syncKeyColumns: ['id'] },
    ],
    fetch: randomRouter(router),
    uploadLimit: 4,
    downloadLimit: 4,
    snapshotChunkRows: 4,
    retry: { initialBackoffMs: 5, maxBackoffMs: 50 },
    ...extra,
  });
  await client.open();
  const d = { name, db, client, router };
  devices.push(d);
  return d;
}

/** Random local writes: inserts, updates and deletes of users and their posts. */
function writeSome(d: Device, n: number): void {
  for (let i = 0; i < n; i++) {
    const users = d.db.prepare('SELECT id FROM users').pluck().all() as string[];
    const posts = d.db.prepare('SELECT id FROM posts').pluck().all() as string[];
    const w = rng.next();
    if (users.length === 0 || w < 0.3) {
      d.db
        .prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)')
        .run(randomUUID(), `${d.name}-${i}`, '');
    } else if (w < 0.6) {
      const author = users[Math.floor(rng.next() * users.length)];
      d.db
        .prepare('INSERT INTO posts (id, title, author_id) VALUES (?, ?, ?)')
        .run(randomUUID(), `p${i}`, author);
    } else if (w < 0.85 && posts.length > 0) {
      d.db
        .prepare('UPDATE posts SET title = ? WHERE id = ?')
        .run(`${d.name} edit ${i}`, posts[Math.floor(rng.next() * posts.length)]);
    } else if (posts.length > 0) {
      d.db.prepare('DELETE FROM posts WHERE id = ?').run(posts[Math.floor(rng.next() * posts.length)]);
    } else {
      d.db.prepare('UPDATE users SET name = ? WHERE id = ?').run(`${d.name} rename ${i}`, users[0]);
    }
  }
}

const rowsOf = (rows: Array<Record<string, unknown>>) =>
  rows
    .map((r) => JSON.stringify(Object.entries(r).map(([k, v]) => [k, v === null ? null : String(v)])))
    .sort();
const deviceRows = (d: Device) => ({
  users: rowsOf(d.db.prepare('SELECT id, name, email FROM users').all() as Array<Record<string, unknown>>),
  posts: rowsOf(
    d.db.prepare('SELECT id, title, author_id FROM posts').all() as Array<Record<string, unknown>>,
  ),
});
async function serverRows(client: pg.Client) {
  const q = async (sql: string) => rowsOf((await client.query(sql, [USER])).rows);
  return {
    users: await q('SELECT id::text, name, email FROM business.users WHERE _sync_scope_id = $1'),
    posts: await q('SELECT id::text, title, author_id::text FROM business.posts WHERE _sync_scope_id = $1'),
  };
}

/** Opens GET /sync/watch on one server and resolves with the first bundle event after `after`. */
async function watchOnce(server: ServerProcess, after: number, signal: AbortSignal) {
  const res = await fetch(`${server.url}/sync/watch?after_bundle_seq=${after}`, {
    headers: { authorization: `Bearer ${token}`, 'oversync-source-id': 'scaleout-watcher' },
    signal,
  });
  expect(res.status).toBe(200);
  return bundleEvents(res);
}

beforeAll(async () => {
  process.stdout.write(`[scaleout] seed ${SEED} (replay with OVERSYNC_SCALEOUT_SEED=${SEED})\n`);
  tdb = await createTestDatabase({ prefix: 'oversync_scaleout' });
  admin = new pg.Client({ connectionString: tdb.url });
  await admin.connect();
  await admin.query(TABLES_SQL);
  dir = await tempDir('oversync-scaleout');
  token = await hs256Token(USER);
  const replica = tdb.replicaUrls[0];
  const args = [
    `--database-url=${tdb.url}`,
    ...(replica ? [`--replica-url=${replica}`] : []),
    `--jwt-secret=${SECRET}`,
    ...TABLES.map((t) => `--table=${t}`),
    '--port=0',
  ];
  servers = await Promise.all(Array.from({ length: SERVERS }, () => startServer(args)));
  await Promise.all(servers.map((s) => s.ready()));
}, 180_000);

afterAll(async () => {
  for (const d of devices) {
    await d.client.close().catch(() => undefined);
    d.db.close();
  }
  await Promise.all(servers.map((s) => s.stop()));
  await admin?.end();
  await tdb?.drop();
  await dir?.cleanup();
});

const latestSeq = async () =>
  Number(
    (
      await admin.query<{ s: string }>(
        'SELECT (next_bundle_seq - 1)::text AS s FROM sync.user_state WHERE user_id = $1',
        [USER],
      )
    ).rows[0]?.s ?? 0,
  );

/** Syncs every device until a round changes nothing on the server and nothing is pending. */
async function syncUntilQuiet(ds: Device[]): Promise<void> {
  for (let round = 0; round < 10; round++) {
    const before = await latestSeq();
    let pending = 0;
    for (const d of ds) {
      await d.client.sync();
      pending += (await d.client.pendingStatus()).total;
    }
    if (pending === 0 && (await latestSeq()) === before) return;
  }
  throw new Error('devices did not become quiet in 10 rounds');
}

describe('three server processes on one PostgreSQL, each request to a random one', () => {
  it('push, pull and snapshot hydration cross processes; every device ends with the server rows', async () => {
    const a = await device('a');
    expect(await a.client.attach(USER)).toMatchObject({ status: 'connected', outcome: 'started_empty' });
    writeSome(a, OPS_PER_DEVICE);
    await a.client.sync();
    // b and c hydrate from a snapshot whose pages come from random processes.
    const b = await device('b');
    const c = await device('c');
    expect(await b.client.attach(USER)).toMatchObject({ status: 'connected', outcome: 'used_remote_state' });
    expect(await c.client.attach(USER)).toMatchObject({ status: 'connected', outcome: 'used_remote_state' });
    for (let round = 0; round < 3; round++) {
      for (const d of [a, b, c]) {
        writeSome(d, OPS_PER_DEVICE / 3);
        await d.client.sync();
      }
    }
    await syncUntilQuiet([a, b, c]);
    const server = await serverRows(admin);
    expect(server.users.length).toBeGreaterThan(0);
    for (const d of [a, b, c]) expect(deviceRows(d), d.name).toEqual(server);
  });

  it('rebuild(): a snapshot created on one process is paged from the others', async () => {
    const c = devices.find((d) => d.name === 'c')!;
    await c.client.rebuild();
    expect(deviceRows(c)).toEqual(await serverRows(admin));
  });

  it('watch: a stream held by one process sees bundles committed through each of the others', async () => {
    const a = devices.find((d) => d.name === 'a')!;
    for (let w = 0; w < SERVERS; w++) {
      const ac = new AbortController();
      const seq = await latestSeq();
      const next = await watchOnce(servers[w]!, seq, ac.signal);
      a.router.exclude = w; // every request of this push goes to another process
      a.db.prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)').run(randomUUID(), `w${w}`, '');
      await a.client.sync();
      a.router.exclude = undefined;
      expect(await next()).toBeGreaterThan(seq);
      ac.abort();
    }
  });

  it('watch: a device in watch mode pulls what another device pushed through other processes', async () => {
    const d = await device('watching', { watch: { mode: 'auto', fallbackIntervalMs: 600_000 } });
    expect((await d.client.attach(USER)).status).toBe('connected');
    d.client.start();
    const a = devices.find((x) => x.name === 'a')!;
    for (let i = 0; i < 3; i++) {
      const id = randomUUID();
      a.db.prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)').run(id, `watched ${i}`, '');
      await a.client.sync();
      await waitFor(() => d.db.prepare('SELECT 1 FROM users WHERE id = ?').get(id) !== undefined, {
        timeoutMs: 30_000,
        what: `the watching device to pull ${id}`,
      });
    }
    await d.client.stop();
  });

  it('every process served pushes, pulls and snapshot pages; the replica replayed the rows', async () => {
    const table = served.map((m, i) => `server ${i}: ${JSON.stringify(Object.fromEntries(m))}`).join('\n');
    process.stdout.write(`[scaleout] seed ${SEED}, requests served:\n${table}\n`);
    for (const kind of ['push-chunk', 'push-commit', 'pull', 'snapshot-page']) {
      const by = served.filter((m) => (m.get(kind) ?? 0) > 0).length;
      expect(by, `${kind} served by how many processes (seed ${SEED})\n${table}`).toBeGreaterThanOrEqual(2);
    }
    const replicaUrl = tdb.replicaUrls[0];
    if (!replicaUrl) return; // an external server without replicas
    const replica = new pg.Client({ connectionString: replicaUrl });
    await replica.connect();
    try {
      const primary = await serverRows(admin);
      await waitFor(async () => JSON.stringify(await serverRows(replica)) === JSON.stringify(primary), {
        timeoutMs: 30_000,
        what: 'the replica to replay the synced rows',
      });
    } finally {
      await replica.end();
    }
  });
});
