/**
 * Before `demo server` starts anything: what it was asked to use (flags, then DATABASE_URL and
 * DATABASE_REPLICA_URLS, each checked), whether its port is free and whether a given PostgreSQL
 * answers, each failure named by what failed.
 */
import { createServer } from 'node:net';
import pg from 'pg';
import { checkPostgresUrl, redactUrl } from './args.js';
import { causeLine, DemoError, type DemoErrorCode } from './errors.js';

/** What `demo server` was asked to use: flags first, then DATABASE_URL / DATABASE_REPLICA_URLS, each checked. */
export function resolveServerStart(o: {
  databaseUrl?: string | undefined;
  replicaUrls?: readonly string[] | undefined;
  dataDir?: string | undefined;
  env: NodeJS.ProcessEnv;
}): { databaseUrl?: string; replicaUrls?: readonly string[]; dataDir?: string } {
  const envUrl = o.env['DATABASE_URL'];
  const databaseUrl =
    o.databaseUrl ?? (envUrl ? checkPostgresUrl(envUrl, 'demo server: DATABASE_URL') : undefined);
  const envReplicas = (o.env['DATABASE_REPLICA_URLS'] ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const replicaUrls =
    o.replicaUrls ?? envReplicas.map((u) => checkPostgresUrl(u, 'demo server: DATABASE_REPLICA_URLS'));
  if (o.dataDir !== undefined && databaseUrl !== undefined)
    throw new DemoError(
      'DEMO_CONFLICTING_FLAGS',
      `demo server: --data-dir keeps embedded PostgreSQL and cannot go with ${o.databaseUrl ? '--database-url' : 'DATABASE_URL'}`,
    );
  if (databaseUrl === undefined && replicaUrls.length > 0)
    throw new DemoError(
      'DEMO_CONFLICTING_FLAGS',
      'demo server: replica URLs need their primary: give --database-url (or DATABASE_URL) too',
    );
  return {
    ...(databaseUrl ? { databaseUrl } : {}),
    ...(replicaUrls.length ? { replicaUrls } : {}),
    ...(o.dataDir !== undefined ? { dataDir: o.dataDir } : {}),
  };
}

export function listenError(e: unknown, host: string, port: number): DemoError {
  const code = (e as { code?: unknown })?.code;
  if (code === 'EADDRINUSE')
    return new DemoError(
      'DEMO_PORT_IN_USE',
      `port ${port} on ${host} is already in use; stop what uses it or pass another --port (0 = any free port)`,
      { cause: e, details: { host, port } },
    );
  return new DemoError('DEMO_LISTEN_FAILED', `cannot listen on ${host}:${port}: ${causeLine(e)}`, {
    cause: e,
    details: { host, port },
  });
}

/** Binds `host:port` for a moment (port 0 needs no check), so a taken port fails before PostgreSQL starts. */
export function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (e) => reject(listenError(e, host, port)));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** Connects once (10 s at most) and runs `SELECT 1`. */
export async function checkReachable(url: string, code: DemoErrorCode, what: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (e) {
    throw new DemoError(code, `${what} at ${redactUrl(url)} is unreachable: ${causeLine(e)}`, {
      cause: e,
      details: { url: redactUrl(url) },
    });
  } finally {
    await client.end().catch(() => {});
  }
}
