/**
 * The subcommands for real use, as separate processes: `demo server` on an existing database (with
 * its replicas), `demo token`, `demo device` syncing in the background, and `demo status`; and the
 * failures a newcomer meets, each with its own code: a taken port, an unreachable database, a
 * device started before its server, an unknown tenant, another user's device directory.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { createTestDatabase, type TestDatabase, waitFor } from '@x/testkit';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_PATH } from '../../src/workers.js';

const run = promisify(execFile);
const SECRET = 'cli-test-secret';
const env = { ...process.env, DEMO_JWT_SECRET: SECRET };
const nodeArgs = ['--import', 'tsx', CLI_PATH];

let tdb: TestDatabase;
let server: ChildProcess;
let url = '';
const dir = mkdtempSync(join(tmpdir(), 'x-demo-cli-'));
const children: ChildProcess[] = [];

function start(
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
): {
  child: ChildProcess;
  lines: string[];
  stderr(): string;
  waitLine(re: RegExp, ms?: number): Promise<string>;
} {
  const child = spawn(process.execPath, [...nodeArgs, ...args], {
    env: { ...env, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void; reject: (e: Error) => void }> = [];
  let closed = false;
  const noLine = (re: RegExp, why: string) => new Error(`no line ${re}: ${why}\n${lines.join('\n')}\n${err}`);
  createInterface({ input: child.stdout! }).on('line', (l) => {
    lines.push(l);
    for (const w of [...waiters]) {
      if (w.re.test(l)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  // Once its output is read to the end, no awaited line can come: fail at once, with what it said.
  child.once('close', (code) => {
    closed = true;
    for (const w of waiters.splice(0)) w.reject(noLine(w.re, `the process exited (${code})`));
  });
  return {
    child,
    lines,
    stderr: () => err,
    waitLine: (re, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const hit = lines.find((l) => re.test(l));
        if (hit) return resolve(hit);
        if (closed) return reject(noLine(re, 'the process has exited'));
        const t = setTimeout(() => reject(noLine(re, `none in ${ms} ms`)), ms);
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
          },
          reject: (e) => {
            clearTimeout(t);
            reject(e);
          },
        });
      }),
  };
}

const exited = (c: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (c.exitCode !== null) resolve(c.exitCode);
    else c.once('exit', (code) => resolve(code));
  });

beforeAll(async () => {
  tdb = await createTestDatabase({ prefix: 'demo_cli' });
  const s = start([
    'server',
    '--database-url',
    tdb.url,
    ...tdb.replicaUrls.flatMap((r) => ['--replica-url', r]),
    '--port',
    '0',
  ]);
  server = s.child;
  const ready = await s.waitLine(/ready: http:\/\//);
  url = /ready: (http:\/\/\S+)/.exec(ready)?.[1] ?? '';
}, 120_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await tdb?.drop();
  rmSync(dir, { recursive: true, force: true });
});

/** `demo device` in `devDir` as `user`, writing an item every `intervalMs` in each process. */
const deviceArgs = (devDir: string, user: string, server: string, name: string, intervalMs: number) => [
  'device',
  '--dir',
  devDir,
  '--user',
  user,
  '--server',
  server,
  '--interval',
  String(intervalMs),
  '--name',
  name,
];

/** Runs the CLI to its end: exit code and output. */
function demo(
  args: string[],
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...nodeArgs, ...args],
      { env: { ...env, ...extraEnv } },
      (e, stdout, stderr) =>
        resolve({ code: e ? Number((e as { code?: unknown }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** Holds a port (so it is free for nobody else) until `release()`. */
function holdPort(): Promise<{ port: number; server: Server; release(): Promise<void> }> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      resolve({ port, server: srv, release: () => new Promise((r) => srv.close(() => r())) });
    });
  });
}

const stderrLine = (s: string) => s.split('\n').filter((l) => l.trim() !== '');

async function serverItems(base: string, user: string): Promise<number> {
  const t = await token(user);
  const r = await fetch(`${base}/demo/rows`, { headers: { authorization: `Bearer ${t}` } });
  const rows = (await r.json()) as { tables: Record<string, unknown[]> };
  return rows.tables['acme.items']?.length ?? 0;
}

async function token(user: string): Promise<string> {
  const { stdout } = await run(process.execPath, [...nodeArgs, 'token', '--user', user, '--device', 'cli'], {
    env,
  });
  return stdout.trim();
}

describe('demo subcommands', () => {
  it('`demo token` mints a JWT the `demo server` accepts; other tokens get 401', async () => {
    const t = await token('dave');
    expect(t.split('.')).toHaveLength(3);
    const headers = { authorization: `Bearer ${t}`, 'oversync-source-id': 'cli-test' };
    expect((await fetch(`${url}/sync/capabilities`, { headers })).status).toBe(200);
    const { stdout: other } = await run(process.execPath, [...nodeArgs, 'token', '--user', 'dave'], {
      env: { ...env, DEMO_JWT_SECRET: 'not-the-server-secret' },
    });
    const bad = await fetch(`${url}/sync/capabilities`, {
      headers: { authorization: `Bearer ${other.trim()}`, 'oversync-source-id': 'cli-test' },
    });
    expect(bad.status).toBe(401);
  });

  it('`demo device` syncs in the background; `demo status` summarises server, ledger and device (`--json` for machines)', async () => {
    const devDir = join(dir, 'dave-laptop');
    const dev = start(deviceArgs(devDir, 'dave', url, 'dave-laptop', 200));
    await dev.waitLine(/synced with the server/);
    await waitFor(async () => (await serverItems(url, 'dave')) >= 5, {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: "dave's items on the server",
    });
    await dev.waitLine(/progress: pushed \d+, pulled \d+, pending \d+/);
    // The status files are written every second: wait for the primary's to report a connected client.
    // ("not connected" must not count; the last push and pull come from the client's live status)
    await waitFor(
      async () => / {2}connected.* s ago +\d+ s ago /.test((await demo(['status', '--dir', devDir])).stdout),
      {
        timeoutMs: 30_000,
        intervalMs: 500,
        what: 'a status file with a connected sync client',
      },
    );
    const human = await demo(['status', '--server', url, '--dir', devDir]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(
      /^server http:\/\/\S+: healthy, running, profile default, tenants acme, globex/m,
    );
    expect(human.stdout).toMatch(/ledger +\d+ operation\(s\), \d+ committed/);
    expect(human.stdout).toMatch(/node +role +health/);
    expect(human.stdout).toMatch(/device \S+dave-laptop: \d+ process\(es\)/);
    expect(human.stdout).toMatch(/\n {2}p +primary +\d+ +\d+ +connected/);
    // the client's live status: last push and last pull, as seconds ago
    expect(human.stdout).toMatch(/ +last push +last pull +conflicts/);
    expect(human.stdout).toMatch(/\n {2}p +primary .* \d+ s ago +\d+ s ago /);
    expect(human.stdout.split('\n').length).toBeLessThan(30);
    const json = await demo(['status', '--server', url, '--dir', devDir, '--json']);
    expect(json.code).toBe(0);
    const doc = JSON.parse(json.stdout) as {
      server: { ledger: unknown[]; sync: { registered_tables: string[] } };
      device: { processes: Array<{ label: string; metrics: { coordinator?: unknown } }> };
    };
    expect(doc.server.ledger.length).toBeGreaterThan(0);
    expect(doc.server.sync.registered_tables).toContain('acme.items');
    expect(doc.device.processes.find((p) => p.label === 'p')?.metrics.coordinator).toBeDefined();
    // the status file's row counts come from a live query, and its live sync status from client.status
    await waitFor(
      async () => {
        const d = JSON.parse((await demo(['status', '--dir', devDir, '--json'])).stdout) as {
          device: {
            processes: Array<{
              label: string;
              rows?: { items: number } | null;
              live?: { connected: boolean } | null;
            }>;
          };
        };
        const p = d.device.processes.find((x) => x.label === 'p');
        return (p?.rows?.items ?? 0) >= 5 && p?.live?.connected === true;
      },
      { timeoutMs: 30_000, intervalMs: 500, what: 'row counts and a live status in the status file' },
    );
    dev.child.kill('SIGINT');
    expect(await exited(dev.child)).toBe(0);

    // The directory is dave's now: another user is refused, with its own code.
    const eve = await demo(['device', '--dir', devDir, '--user', 'eve', '--server', url]);
    expect(eve.code).toBe(1);
    expect(stderrLine(eve.stderr)).toEqual([
      expect.stringMatching(/^DEMO_DEVICE_OWNED_BY_OTHER_USER: .*"dave".*"eve"/),
    ]);
  });

  it('`demo status` against no server fails with DEMO_SERVER_UNREACHABLE; a directory without a device with DEMO_NO_DEVICE_STATUS', async () => {
    const held = await holdPort();
    await held.release();
    const r = await demo(['status', '--server', `http://127.0.0.1:${held.port}`]);
    expect(r.code).toBe(1);
    expect(stderrLine(r.stderr)).toEqual([expect.stringMatching(/^DEMO_SERVER_UNREACHABLE: .*ECONNREFUSED/)]);
    const d = await demo(['status', '--dir', join(dir, 'nothing-here')]);
    expect(d.code).toBe(1);
    expect(stderrLine(d.stderr)).toEqual([expect.stringMatching(/^DEMO_NO_DEVICE_STATUS: /)]);
  });

  it('`demo device --tenant` the server does not serve stops with DEMO_UNKNOWN_TENANT', async () => {
    const r = await demo([
      'device',
      '--dir',
      join(dir, 'tenantless'),
      '--user',
      'tim',
      '--server',
      url,
      '--tenant',
      'bogus',
      '--interval',
      '0',
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^DEMO_UNKNOWN_TENANT: .*"bogus".*acme, globex/m);
  });

  it('`demo device` started before its server keeps retrying (each error logged once) and syncs its offline items once the server is up', async () => {
    const held = await holdPort();
    await held.release(); // a port nobody listens on, until the server below takes it
    const base = `http://127.0.0.1:${held.port}`;
    const devDir = join(dir, 'fay-laptop');
    const dev = start(deviceArgs(devDir, 'fay', base, 'fay-laptop', 100));
    await dev.waitLine(/sync error \(attach\): .*ECONNREFUSED.*retrying/);
    // Items written while the server is down: wait until the device holds some.
    const localItems = () => {
      const db = new Database(join(devDir, 'device.db'), { readonly: true });
      try {
        return (db.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n;
      } catch {
        return 0;
      } finally {
        db.close();
      }
    };
    await waitFor(() => localItems() >= 20, {
      timeoutMs: 60_000,
      intervalMs: 100,
      what: 'items written offline',
    });
    const offline = localItems();
    const srv = start(['server', '--database-url', tdb.url, '--port', String(held.port)]);
    await srv.waitLine(/ready: http:\/\//);
    await dev.waitLine(/synced with the server/);
    await waitFor(async () => (await serverItems(base, 'fay')) >= offline, {
      timeoutMs: 60_000,
      intervalMs: 250,
      what: "fay's offline items on the server",
    });
    const errors = dev.lines.filter((l) => l.includes('sync error (attach)'));
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors.length).toBeLessThanOrEqual(3); // refused, and at most the listener's start-up states: never a flood
    expect(dev.lines.some((l) => /sync attach works again after \d+ failure/.test(l))).toBe(true);
    dev.child.kill('SIGINT');
    srv.child.kill('SIGINT');
    expect(await exited(dev.child)).toBe(0);
    expect(await exited(srv.child)).toBe(0);
  });

  it('`demo server` on a taken port fails with DEMO_PORT_IN_USE before starting PostgreSQL', async () => {
    const held = await holdPort();
    try {
      const r = await demo(['server', '--port', String(held.port)]);
      expect(r.code).toBe(1);
      expect(stderrLine(r.stderr)).toEqual([
        expect.stringMatching(new RegExp(`^DEMO_PORT_IN_USE: port ${held.port} `)),
      ]);
      expect(r.stdout).not.toMatch(/PostgreSQL/);
    } finally {
      await held.release();
    }
  });

  it('`demo server` with an unreachable database fails with DEMO_DATABASE_UNREACHABLE (password not shown)', async () => {
    const held = await holdPort();
    await held.release();
    const r = await demo([
      'server',
      '--port',
      '0',
      '--database-url',
      `postgres://u:s3cret@127.0.0.1:${held.port}/db`,
    ]);
    expect(r.code).toBe(1);
    expect(stderrLine(r.stderr)).toEqual([
      expect.stringMatching(/^DEMO_DATABASE_UNREACHABLE: .*127\.0\.0\.1.*ECONNREFUSED/),
    ]);
    expect(r.stderr).not.toContain('s3cret');
  });

  it('`demo server --data-dir` prints the PostgreSQL URL with credentials and keeps its data for the next start', async () => {
    // As root, PostgreSQL runs as `postgres`, which must reach the directory: mkdtemp's is 0700.
    chmodSync(dir, 0o755);
    const dataDir = join(dir, 'pgdata');
    const first = start(['server', '--port', '0', '--data-dir', dataDir], { DATABASE_URL: '' });
    await first.waitLine(/ready: http:\/\//, 120_000);
    const pgLine = await first.waitLine(/postgres +primary postgres:\/\//);
    const pgUrl = /primary (postgres:\/\/\S+)/.exec(pgLine)?.[1] ?? '';
    expect(pgUrl).toMatch(/^postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/postgres$/);
    expect(first.lines.some((l) => /HTTP +http:\/\/127\.0\.0\.1:\d+ +\(sync: /.test(l))).toBe(true);
    expect(first.lines.some((l) => l.includes(`kept in ${dataDir}`))).toBe(true);
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    await c.query('CREATE TABLE kept_marker (v text); INSERT INTO kept_marker VALUES ($$still here$$)');
    await c.end();
    first.child.kill('SIGINT');
    expect(await exited(first.child)).toBe(0);

    const second = start(['server', '--port', '0', '--data-dir', dataDir], { DATABASE_URL: '' });
    await second.waitLine(/ready: http:\/\//, 120_000);
    expect(second.lines.some((l) => l.includes('reusing its data directory'))).toBe(true);
    const url2 = /primary (postgres:\/\/\S+)/.exec(await second.waitLine(/postgres +primary/))?.[1] ?? '';
    const c2 = new pg.Client({ connectionString: url2 });
    await c2.connect();
    expect((await c2.query('SELECT v FROM kept_marker')).rows).toEqual([{ v: 'still here' }]);
    await c2.end();
    second.child.kill('SIGINT');
    expect(await exited(second.child)).toBe(0);
  }, 300_000); // two embedded PostgreSQL starts (the first runs initdb) on a shared 2-core machine

  it('`demo server` shuts down cleanly on SIGINT', async () => {
    server.kill('SIGINT');
    expect(await exited(server)).toBe(0);
  });
});
