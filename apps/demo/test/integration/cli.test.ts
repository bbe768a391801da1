/**
 * The subcommands for real use, as separate processes: `demo server` on an existing database (with
 * its replicas), `demo token`, `demo device` syncing in the background, and `demo status`.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { createTestDatabase, type TestDatabase } from '@x/testkit';
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

function start(args: string[]): {
  child: ChildProcess;
  lines: string[];
  waitLine(re: RegExp, ms?: number): Promise<string>;
} {
  const child = spawn(process.execPath, [...nodeArgs, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const lines: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
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
  return {
    child,
    lines,
    waitLine: (re, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const hit = lines.find((l) => re.test(l));
        if (hit) return resolve(hit);
        const t = setTimeout(
          () => reject(new Error(`no line ${re} in ${ms} ms\n${lines.join('\n')}\n${err}`)),
          ms,
        );
        waiters.push({
          re,
          resolve: (l) => {
            clearTimeout(t);
            resolve(l);
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

  it('`demo device` syncs in the background and `demo status` shows server, ledger and device metrics', async () => {
    const devDir = join(dir, 'dave-laptop');
    const dev = start([
      'device',
      '--dir',
      devDir,
      '--user',
      'dave',
      '--server',
      url,
      '--interval',
      '200',
      '--name',
      'dave-laptop',
    ]);
    await dev.waitLine(/sync-ready/);
    const t = await token('dave');
    let items = 0;
    for (let i = 0; i < 100 && items < 5; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const rows = (await (
        await fetch(`${url}/demo/rows`, { headers: { authorization: `Bearer ${t}` } })
      ).json()) as {
        tables: Record<string, unknown[]>;
      };
      items = rows.tables['acme.items']?.length ?? 0;
    }
    expect(items).toBeGreaterThanOrEqual(5);
    await new Promise((r) => setTimeout(r, 1200)); // a status file is written every second
    const { stdout } = await run(
      process.execPath,
      [...nodeArgs, 'status', '--server', url, '--dir', devDir],
      { env },
    );
    expect(stdout).toContain('"ledger"');
    expect(stdout).toContain('"registered_tables"');
    expect(stdout).toContain('status-p.json');
    expect(stdout).toMatch(/"coordinator": \{/);
    dev.child.kill('SIGINT');
    expect(await exited(dev.child)).toBe(0);
  });

  it('`demo server` shuts down cleanly on SIGINT', async () => {
    server.kill('SIGINT');
    expect(await exited(server)).toBe(0);
  });
});
