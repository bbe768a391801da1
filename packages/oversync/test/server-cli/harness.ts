/**
 * Runs `oversync-server` as a user does: the package's `bin` (from package.json, so dist/: rebuild
 * after src changes) in a child process, waiting on its output and on /readyz, never on sleeps.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ChildHandle, spawnNode, waitFor } from '@x/testkit';
import { SignJWT } from 'jose';

export const PACKAGE_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SECRET = 'a-test-secret-that-is-at-least-32-chars-long';
export const TABLES = ['business.users', 'business.posts'];
/** The business tables of the tests (the fixture's users and posts). */
export const TABLES_SQL = `
CREATE SCHEMA IF NOT EXISTS business;
CREATE TABLE IF NOT EXISTS business.users (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
  PRIMARY KEY (_sync_scope_id, id));
CREATE TABLE IF NOT EXISTS business.posts (
  _sync_scope_id TEXT NOT NULL, id UUID NOT NULL, title TEXT NOT NULL, author_id UUID,
  PRIMARY KEY (_sync_scope_id, id),
  CONSTRAINT posts_author_id_fkey FOREIGN KEY (_sync_scope_id, author_id)
    REFERENCES business.users (_sync_scope_id, id) DEFERRABLE INITIALLY DEFERRED);`;

/** The script of a `bin` of @x/oversync, as package.json names it. */
export function binScript(name: string): string {
  const pkg = JSON.parse(readFileSync(join(PACKAGE_DIR, 'package.json'), 'utf8')) as {
    bin?: Record<string, string>;
  };
  const rel = pkg.bin?.[name];
  if (!rel) throw new Error(`package.json of @x/oversync has no bin named ${JSON.stringify(name)}`);
  return join(PACKAGE_DIR, rel);
}

/** Only what the child should see: no inherited OVERSYNC_* of the test run. */
function childEnv(env: Record<string, string>): Record<string, string> {
  const clean: Record<string, string> = {};
  for (const k of Object.keys(process.env)) if (k.startsWith('OVERSYNC_')) clean[k] = '';
  return { ...clean, ...env };
}

export interface ServerProcess {
  child: ChildHandle;
  url: string;
  /** The JSON log lines printed so far (parsed). */
  logs(): Array<Record<string, unknown>>;
  /** Polls GET /readyz until 200. */
  ready(timeoutMs?: number): Promise<void>;
  /** SIGTERM, then the exit status. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function runBin(args: string[], env: Record<string, string> = {}, cwd?: string): ChildHandle {
  return spawnNode(binScript('oversync-server'), args, { env: childEnv(env), ...(cwd ? { cwd } : {}) });
}

/** Starts the server and waits for its "listening" JSON log line. */
export async function startServer(
  args: string[],
  env: Record<string, string> = {},
  opts: { cwd?: string; startTimeoutMs?: number } = {},
): Promise<ServerProcess> {
  const child = runBin(args, env, opts.cwd);
  const parsed: Array<Record<string, unknown>> = [];
  void (async () => {
    for await (const line of child.lines) {
      try {
        parsed.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  })();
  let listening: string;
  try {
    listening = await child.waitForLine(/"msg":"oversync-server listening"/, opts.startTimeoutMs ?? 60_000);
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`oversync-server did not start: ${(e as Error).message}\nstderr:\n${child.stderr}`);
  }
  const urls = (JSON.parse(listening) as { urls: string[] }).urls;
  const url = urls.find((u) => u.includes('127.0.0.1')) ?? urls[0]!;
  return {
    child,
    url: url.replace('0.0.0.0', '127.0.0.1'),
    logs: () => parsed,
    async ready(timeoutMs = 60_000) {
      await waitFor(
        async () => {
          const r = await fetch(`${url.replace('0.0.0.0', '127.0.0.1')}/readyz`).catch(() => null);
          return r?.status === 200;
        },
        { timeoutMs, what: `GET ${url}/readyz to answer 200 (stderr: ${child.stderr.slice(-2000)})` },
      );
    },
    async stop() {
      child.kill('SIGTERM');
      return child.wait();
    },
  };
}

export function hs256Token(
  sub: string,
  secret = SECRET,
  claims: Record<string, unknown> = {},
): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(new TextEncoder().encode(secret));
}

/** One device of a user: bearer token + Oversync-Source-ID, raw protocol calls over fetch. */
export class HttpDevice {
  readonly sourceId = `src-${randomUUID().slice(0, 8)}`;
  constructor(
    readonly url: string,
    readonly token: string,
  ) {}

  headers(): Record<string, string> {
    return {
      authorization: `Bearer ${this.token}`,
      'oversync-source-id': this.sourceId,
      'content-type': 'application/json',
    };
  }

  async call(method: 'GET' | 'POST', path: string, body?: unknown) {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: this.headers(),
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as Record<string, unknown> };
  }

  /** connect + one push of `rows` (create, one chunk, commit). Throws with the answer on any non-200. */
  async pushRows(rows: unknown[], sourceBundleId = 1): Promise<Record<string, unknown>> {
    const must = (r: { status: number; body: Record<string, unknown> }, what: string) => {
      if (r.status !== 200) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    };
    must(await this.call('POST', '/sync/connect', { has_local_pending_rows: false }), 'connect');
    const session = must(
      await this.call('POST', '/sync/push-sessions', {
        source_bundle_id: sourceBundleId,
        planned_row_count: rows.length,
      }),
      'push session',
    );
    const pushId = String(session['push_id']);
    must(
      await this.call('POST', `/sync/push-sessions/${pushId}/chunks`, { start_row_ordinal: 0, rows }),
      'chunk',
    );
    return must(await this.call('POST', `/sync/push-sessions/${pushId}/commit`), 'commit');
  }
}

export function userRow(id: string, name: string) {
  return {
    schema: 'business',
    table: 'users',
    key: { id },
    op: 'INSERT',
    base_row_version: 0,
    payload: { id, name, email: `${name}@example.com` },
  };
}
