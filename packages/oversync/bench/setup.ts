// What the benches share: a private embedded PostgreSQL with a fresh database; for the server
// benches also the parent's side of bench/server-child.ts's line protocol, a user's HTTP requests
// to that server and the multi-row INSERT of their plain baselines.
import net from 'node:net';
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

/**
 * `user`'s JSON requests to the server at `baseUrl` (the x-user header); any status but 200 throws.
 * HTTP/1.1 written and read by hand on kept-alive sockets (as autocannon and wrk do): the load
 * generator shares the machine's two cores with the server and PostgreSQL, and its CPU is taken
 * from theirs. `fetch` (undici) took about 1 ms of CPU per request here, `node:http` 0.35-0.45 ms.
 * Answers must carry a content-length (the server's JSON answers do); anything else throws.
 */
export function httpClient(baseUrl: string, user: string, sourceId = 'bench-device'): Call {
  const base = new URL(baseUrl);
  const idle: RawHttpConnection[] = [];
  const headers = `host: ${base.host}\r\nx-user: ${user}\r\noversync-source-id: ${sourceId}\r\n`;
  return async (method, path, body) => {
    const data = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    const head =
      data === undefined
        ? `${method} ${path} HTTP/1.1\r\n${headers}\r\n`
        : `${method} ${path} HTTP/1.1\r\n${headers}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(data)}\r\n\r\n`;
    const conn = idle.pop() ?? (await RawHttpConnection.open(base.hostname, Number(base.port)));
    let res: RawHttpAnswer;
    try {
      res = await conn.request(data === undefined ? head : head + data);
    } catch (e) {
      conn.close();
      throw e;
    }
    if (res.keepAlive) idle.push(conn);
    else conn.close();
    if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${res.body}`);
    return JSON.parse(res.body) as Record<string, unknown>;
  };
}

interface RawHttpAnswer {
  status: number;
  body: string;
  keepAlive: boolean;
}

/** One kept-alive HTTP/1.1 connection, one request at a time. */
class RawHttpConnection {
  readonly #socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  #waiting: { resolve: (a: RawHttpAnswer) => void; reject: (e: Error) => void } | undefined;
  #failed: Error | undefined;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (b: Buffer) => {
      this.#buf = this.#buf.length === 0 ? b : Buffer.concat([this.#buf, b]);
      this.#parse();
    });
    const fail = (e: Error) => {
      this.#failed ??= e;
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.reject(e);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the server closed the connection')));
  }

  static open(host: string, port: number): Promise<RawHttpConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port }, () => {
        socket.off('error', reject);
        resolve(new RawHttpConnection(socket));
      });
      socket.once('error', reject);
    });
  }

  request(bytes: string): Promise<RawHttpAnswer> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#waiting = { resolve, reject };
      this.#socket.write(bytes);
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #parse(): void {
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0 || !this.#waiting) return;
    const head = this.#buf.toString('latin1', 0, end);
    const lines = head.split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    let length: number | undefined;
    let keepAlive = true;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') length = Number(value);
      else if (name === 'connection' && value.toLowerCase() === 'close') keepAlive = false;
      else if (name === 'transfer-encoding') length = Number.NaN;
    }
    const w = this.#waiting;
    if (length === undefined || Number.isNaN(length)) {
      this.#waiting = undefined;
      w.reject(new Error(`answer without a content-length: ${lines[0]}`));
      return;
    }
    if (this.#buf.length < end + 4 + length) return;
    const body = this.#buf.toString('utf8', end + 4, end + 4 + length);
    this.#buf = this.#buf.subarray(end + 4 + length);
    this.#waiting = undefined;
    w.resolve({ status, body, keepAlive });
  }
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

/** The machine's CPU time so far, busy and idle (ms, all cores), from /proc/stat; zeros elsewhere. */
export async function machineCpuMs(): Promise<{ busy: number; idle: number }> {
  const { readFile } = await import('node:fs/promises');
  try {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle, iowait
    const busy = f.slice(0, 8).reduce((a, b) => a + b, 0) - idle; // user … steal
    return { busy: busy * 10, idle: idle * 10 }; // USER_HZ = 100
  } catch {
    return { busy: 0, idle: 0 };
  }
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
