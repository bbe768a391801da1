// What the benches share: a private embedded PostgreSQL with a fresh database; for the server
// benches also the parent's side of bench/server-child.ts's line protocol, a user's HTTP requests
// to that server and the multi-row INSERT of their plain baselines.
import { join } from 'node:path';
import { spawnNode, startPostgres } from '@x/testkit';
import pg from 'pg';

/** A copy of business.users without the sync triggers: what the plain-INSERT baselines write. */
export const PLAIN_USERS_SQL =
  'CREATE SCHEMA plain; CREATE TABLE plain.users (LIKE business.users INCLUDING ALL)';

/** A private embedded PostgreSQL (no replicas) with a fresh database `name`, each of `sql` run in it. */
export async function benchDatabase(name: string, ...sql: string[]) {
  const pgCluster = await startPostgres({ replicas: 0 });
  const admin = new pg.Client({ connectionString: pgCluster.primary.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = pgCluster.primary.urlFor(name);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  for (const statements of sql) await setup.query(statements);
  await setup.end();
  return { pgCluster, url };
}

/** The JSON line bench/server-child.ts prints on `stats`. */
export interface ServerStats {
  rssMb: number;
  baseRssMb: number;
  peakRssMb: number;
  eldMaxMs: number;
  eldP99Ms: number;
  statements: number;
  cpuMs: number;
  cpuUserMs: number;
}

/** bench/server-child.ts over the database `url`, once it is ready; `env` is added to its environment. */
export async function startServerChild(url: string, env: Record<string, string> = {}) {
  const child = spawnNode(join(import.meta.dirname, 'server-child.ts'), [url], { env });
  const baseUrl = (await child.waitForLine(/^ready /, 60_000)).slice('ready '.length);
  return {
    baseUrl,
    /** What the server wrote to stderr (the SQL logs of BENCH_LOG_SQL / BENCH_SLOW_SQL_MS). */
    get stderr() {
      return child.stderr;
    },
    async stats(): Promise<ServerStats> {
      child.send('stats');
      return JSON.parse(await child.waitForLine(/^\{/, 30_000)) as ServerStats;
    },
    /** Clears the event-loop histogram and the statement counter, notes the RSS. */
    async reset(): Promise<void> {
      child.send('reset');
      await child.waitForLine(/^ok$/, 30_000);
    },
    async exit(): Promise<void> {
      child.send('exit');
      await child.wait();
    },
  };
}

/** A multi-row INSERT of users `rows`, all of scope `scope`, into `table`: its text and parameters. */
export function usersInsert(
  table: string,
  scope: string,
  rows: ReadonlyArray<{ id: string; name: string; email: string }>,
): { text: string; params: unknown[] } {
  const values: string[] = [];
  const params: unknown[] = [];
  for (const r of rows) {
    const n = params.length;
    values.push(`($${n + 1}, $${n + 2}, $${n + 3}, $${n + 4})`);
    params.push(scope, r.id, r.name, r.email);
  }
  return {
    text: `INSERT INTO ${table} (_sync_scope_id, id, name, email) VALUES ${values.join(', ')}`,
    params,
  };
}

export type Call = (method: 'GET' | 'POST', path: string, body?: unknown) => Promise<Record<string, unknown>>;

/** `user`'s JSON requests to the server at `baseUrl` (the x-user header); any status but 200 throws. */
export function httpClient(baseUrl: string, user: string, sourceId = 'bench-device'): Call {
  return async (method, path, body) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { 'x-user': user, 'oversync-source-id': sourceId, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  };
}
