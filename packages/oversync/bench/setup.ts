// What the benches share: a private embedded PostgreSQL with a fresh database; for the server
// benches also the parent's side of bench/server-child.ts's line protocol, a user's HTTP requests
// to that server and the multi-row INSERT of their plain baselines.
import http from 'node:http';
import { join } from 'node:path';
import { spawnNode, startPostgres } from '@x/testkit';
import pg from 'pg';

/** A copy of business.users without the sync triggers: what the plain-INSERT baselines write. */
export const PLAIN_USERS_SQL =
  'CREATE SCHEMA plain; CREATE TABLE plain.users (LIKE business.users INCLUDING ALL)';

/** A private embedded PostgreSQL (no replicas) with a fresh database `name`, each of `sql` run in it. */
export async function benchDatabase(name: string, ...sql: string[]) {
  // BENCH_PG_STATEMENTS=1: pg_stat_statements loaded (see topStatements).
  const statements = process.env.BENCH_PG_STATEMENTS === '1';
  // BENCH_PG_SETTINGS="name=value,…": extra server settings (e.g. auto_explain's, to look at plans).
  const settings: Record<string, string> = statements
    ? { shared_preload_libraries: 'pg_stat_statements' }
    : {};
  for (const kv of (process.env.BENCH_PG_SETTINGS ?? '').split(',').filter(Boolean)) {
    const i = kv.indexOf('=');
    settings[kv.slice(0, i)] = kv.slice(i + 1);
  }
  const pgCluster = await startPostgres({ replicas: 0, settings });
  const admin = new pg.Client({ connectionString: pgCluster.primary.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = pgCluster.primary.urlFor(name);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  for (const text of sql) await setup.query(text);
  if (statements) await setup.query('CREATE EXTENSION pg_stat_statements');
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

/** Kept-alive connections of every httpClient of this process. */
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

/**
 * `user`'s JSON requests to the server at `baseUrl` (the x-user header); any status but 200 throws.
 * Through node:http on kept-alive connections: the load generator shares the machine's two cores
 * with the server and PostgreSQL, and `fetch` (undici) took about 1 ms of CPU per request here,
 * three times as much.
 */
export function httpClient(baseUrl: string, user: string, sourceId = 'bench-device'): Call {
  const base = new URL(baseUrl);
  return (method, path, body) =>
    new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
      const req = http.request(
        {
          agent,
          host: base.hostname,
          port: base.port,
          method,
          path,
          headers: {
            'x-user': user,
            'oversync-source-id': sourceId,
            ...(data === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }),
          },
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (b: Buffer) => parts.push(b));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(parts).toString('utf8');
            if (res.statusCode !== 200) reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`));
            else resolve(JSON.parse(text) as Record<string, unknown>);
          });
        },
      );
      req.on('error', reject);
      req.end(data);
    });
}

/**
 * With BENCH_PG_STATEMENTS=1: the `n` statements of database `url` that took the most execution
 * time since `resetStatements`, one line each (ms total, calls, ms per call, text); else undefined.
 */
export async function topStatements(url: string, n = 15): Promise<string | undefined> {
  if (process.env.BENCH_PG_STATEMENTS !== '1') return undefined;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ total: number; plan: number; calls: string; q: string }>(
      `SELECT total_exec_time AS total, total_plan_time AS plan, calls::text, left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS q
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY total_exec_time DESC LIMIT $1`,
      [n],
    );
    return r.rows
      .map(
        (x) =>
          `${x.total.toFixed(0)} ms (plan ${x.plan.toFixed(0)} ms)\t${x.calls}\t${(x.total / Number(x.calls)).toFixed(3)} ms\t${x.q}`,
      )
      .join('\n');
  } finally {
    await c.end();
  }
}

/** With BENCH_PG_STATEMENTS=1: clears pg_stat_statements of database `url`. */
export async function resetStatements(url: string): Promise<void> {
  if (process.env.BENCH_PG_STATEMENTS !== '1') return;
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query('SELECT pg_stat_statements_reset()');
  await c.end();
}

/** CPU time (ms) of this machine's postgres processes so far (Linux /proc; 0 elsewhere). */
export async function postgresCpuMs(): Promise<number> {
  const { readdir, readFile } = await import('node:fs/promises');
  let ticks = 0;
  let pids: string[] = [];
  try {
    pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d));
  } catch {
    return 0;
  }
  for (const pid of pids) {
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      if (!stat.slice(stat.indexOf('(') + 1, close).startsWith('postgres')) continue;
      const f = stat.slice(close + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    } catch {
      // gone meanwhile
    }
  }
  return ticks * 10; // USER_HZ = 100
}

/**
 * With BENCH_PG_LOG_LINES=<n>: the last n lines of the primary's log (where auto_explain, enabled
 * through BENCH_PG_SETTINGS, writes its plans); else undefined.
 */
export async function postgresLogTail(cluster: { primary: unknown }): Promise<string | undefined> {
  const lines = Number(process.env.BENCH_PG_LOG_LINES ?? 0);
  if (!(lines > 0)) return undefined;
  return (cluster.primary as { logTail(lines: number): Promise<string> }).logTail(lines);
}
