import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sleep, throwIfAborted } from '@x/core';
import type pg from 'pg';
import { TestkitError } from '../errors.js';
import { trackPostmaster, untrackPostmaster } from '../internal/exit.js';
import type { RunAs } from '../internal/fs.js';
import { descendants, waitGone } from '../internal/procs.js';
import { pgBinaries } from './binaries.js';
import { pollUntil, urlWithDatabase, withClient } from './sql.js';

export interface PgNode {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly url: string;
  urlFor(database: string): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  promote(): Promise<void>;
}

/** Server settings of every embedded node: fast and small, never durable (test data only). */
export const DEFAULT_POSTGRES_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  listen_addresses: '127.0.0.1',
  unix_socket_directories: '',
  fsync: 'off',
  full_page_writes: 'off',
  shared_buffers: '16MB',
  max_connections: '200',
  wal_level: 'replica',
  max_wal_senders: '10',
  max_replication_slots: '10',
  wal_keep_size: '256MB',
  hot_standby: 'on',
  hot_standby_feedback: 'on',
  wal_receiver_status_interval: '1s',
  wal_retrieve_retry_interval: '200ms',
  jit: 'off',
  lc_messages: 'C',
  log_min_messages: 'warning',
  logging_collector: 'off',
});

export const DEFAULT_START_TIMEOUT_MS = 60_000;
export const DEFAULT_STOP_TIMEOUT_MS = 30_000;
export const DEFAULT_PROMOTE_TIMEOUT_MS = 60_000;

function removeSysvShm(id: string): Promise<void> {
  if (process.platform !== 'linux' && process.platform !== 'darwin') return Promise.resolve();
  return new Promise((resolve) => {
    execFile('ipcrm', ['-m', id], () => resolve());
  });
}

/** Behaviour shared by embedded and external nodes: everything that is plain SQL. */
export abstract class SqlPgNode implements PgNode {
  readonly host: string;
  readonly port: number;
  readonly url: string;

  constructor(
    readonly name: string,
    url: string,
  ) {
    const u = new URL(url);
    this.host = u.hostname;
    this.port = Number(u.port || 5432);
    this.url = url;
  }

  urlFor(database: string): string {
    return urlWithDatabase(this.url, database);
  }

  abstract kill(): Promise<void>;
  abstract stop(): Promise<void>;
  abstract start(): Promise<void>;

  async #requireReplica(client: pg.Client): Promise<void> {
    const { rows } = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
    if (!rows[0]?.r) {
      throw new TestkitError('TESTKIT_NOT_A_REPLICA', `${this.name} is not in recovery (not a replica)`, {
        details: { node: this.name },
      });
    }
  }

  /** Pauses WAL replay and waits until the replica reports it paused. */
  async pauseReplay(): Promise<void> {
    await withClient(this.url, async (client) => {
      await this.#requireReplica(client);
      await client.query('SELECT pg_wal_replay_pause()');
      await pollUntil(
        async () =>
          (await client.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]?.s ===
          'paused',
        {
          timeoutMs: 30_000,
          onTimeout: () => new TestkitError('TESTKIT_TIMEOUT', `${this.name}: WAL replay did not pause`),
        },
      );
    });
  }

  async resumeReplay(): Promise<void> {
    await withClient(this.url, async (client) => {
      await this.#requireReplica(client);
      await client.query('SELECT pg_wal_replay_resume()');
    });
  }

  /** Promotes the replica and waits until it is out of recovery (accepts writes). */
  async promote(): Promise<void> {
    await withClient(this.url, async (client) => {
      await this.#requireReplica(client);
      await client.query('SELECT pg_promote(true, $1)', [Math.floor(DEFAULT_PROMOTE_TIMEOUT_MS / 1000)]);
      await pollUntil(
        async () => !(await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r,
        {
          timeoutMs: DEFAULT_PROMOTE_TIMEOUT_MS,
          onTimeout: () => new TestkitError('TESTKIT_TIMEOUT', `${this.name}: promotion did not finish`),
        },
      );
    });
  }
}

/** A node of a server we did not start (DATABASE_URL / DATABASE_REPLICA_URLS): no process control. */
export class ExternalPgNode extends SqlPgNode {
  #unsupported(op: string): Promise<never> {
    return Promise.reject(
      new TestkitError(
        'TESTKIT_EXTERNAL_UNSUPPORTED',
        `${op}() is not possible on ${this.name}: it is an external server (DATABASE_URL); fault tests need an embedded cluster (startPostgres({ embedded: true }))`,
        { details: { node: this.name, op } },
      ),
    );
  }
  kill(): Promise<void> {
    return this.#unsupported('kill');
  }
  stop(): Promise<void> {
    return this.#unsupported('stop');
  }
  start(): Promise<void> {
    return this.#unsupported('start');
  }
}

export interface EmbeddedPgNodeInit {
  name: string;
  dataDir: string;
  logPath: string;
  port: number;
  user: string;
  password: string;
  runAs: RunAs | null;
  settings: Readonly<Record<string, string>>;
}

/** A postmaster we spawn ourselves, in its own process group so kill() takes all its backends along. */
export class EmbeddedPgNode extends SqlPgNode {
  readonly dataDir: string;
  readonly logPath: string;
  #init: EmbeddedPgNodeInit;
  #proc: ChildProcess | undefined;
  #exited: Promise<void> | undefined;

  constructor(init: EmbeddedPgNodeInit) {
    super(
      init.name,
      `postgres://${encodeURIComponent(init.user)}:${encodeURIComponent(init.password)}@127.0.0.1:${init.port}/postgres`,
    );
    this.#init = init;
    this.dataDir = init.dataDir;
    this.logPath = init.logPath;
  }

  get running(): boolean {
    return this.#proc !== undefined;
  }

  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  async logTail(lines = 30): Promise<string> {
    try {
      return (await readFile(this.logPath, 'utf8')).split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  /** Starts the postmaster (again) on the same port and data directory and waits until it accepts queries. */
  async start(opts: { signal?: AbortSignal | undefined; timeoutMs?: number } = {}): Promise<void> {
    throwIfAborted(opts.signal);
    if (this.#proc) return;
    const { postgres } = await pgBinaries(this.#init.runAs);
    const args = ['-D', this.dataDir, '-p', String(this.port)];
    for (const [k, v] of Object.entries(this.#init.settings)) args.push('-c', `${k}=${v}`);
    const log = openSync(this.logPath, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(postgres, args, {
        detached: true,
        stdio: ['ignore', log, log],
        env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' },
        ...(this.#init.runAs ?? {}),
      });
    } finally {
      closeSync(log);
    }
    proc.unref();
    const pid = proc.pid;
    if (pid === undefined) {
      await new Promise((resolve) => proc.once('error', resolve));
      throw new TestkitError('TESTKIT_POSTGRES_START_FAILED', `${this.name}: could not spawn postgres`, {
        details: { node: this.name },
      });
    }
    trackPostmaster(pid);
    this.#proc = proc;
    let exited = false;
    this.#exited = new Promise<void>((resolve) => {
      proc.once('exit', () => {
        exited = true;
        untrackPostmaster(pid);
        if (this.#proc === proc) this.#proc = undefined;
        resolve();
      });
    });
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    for (;;) {
      if (exited) {
        throw new TestkitError(
          'TESTKIT_POSTGRES_START_FAILED',
          `${this.name}: postgres exited while starting\n${await this.logTail()}`,
          {
            details: { node: this.name, port: this.port },
          },
        );
      }
      try {
        await withClient(this.url, (c) => c.query('SELECT 1'), { connectTimeoutMs: 2000 });
        return;
      } catch (e) {
        if (opts.signal?.aborted) {
          await this.kill();
          throwIfAborted(opts.signal);
        }
        if (Date.now() > deadline) {
          await this.kill();
          throw new TestkitError(
            'TESTKIT_POSTGRES_START_FAILED',
            `${this.name}: not ready in time\n${await this.logTail()}`,
            {
              cause: e,
              details: { node: this.name, port: this.port },
            },
          );
        }
      }
      await sleep(25);
    }
  }

  #signal(signal: NodeJS.Signals, group: boolean): void {
    const pid = this.#proc?.pid;
    if (pid === undefined) return;
    try {
      process.kill(group ? -pid : pid, signal);
    } catch {}
  }

  async #waitExit(timeoutMs: number): Promise<boolean> {
    const exited = this.#exited;
    if (!this.#proc || !exited) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    try {
      return await Promise.race([exited.then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL to the postmaster's whole process group (postmaster and backends); the data directory stays. */
  async kill(): Promise<void> {
    if (!this.#proc) return;
    const pid = this.#proc.pid as number;
    const shmId = await this.#sysvShmId();
    // PostgreSQL's children call setsid(), so they are not in the postmaster's process group. Freeze
    // the postmaster (it can fork no more), find its children, and SIGKILL them all at once: a restart
    // right after finds no old backend still attached to the shared memory.
    this.#signal('SIGSTOP', false);
    const children = await descendants(pid).catch(() => []);
    this.#signal('SIGKILL', true);
    for (const child of children) {
      try {
        process.kill(child, 'SIGKILL');
      } catch {}
    }
    await this.#waitExit(30_000);
    await waitGone(children, 30_000);
    // A killed postmaster cannot release its small System V segment; a restart would reuse it, but a
    // cluster stopped after a kill would leak one per run. Remove it (best effort; a later start makes a new one).
    if (shmId !== undefined) await removeSysvShm(shmId);
  }

  /** The System V shared memory id from postmaster.pid (line 7: key and id), if any. */
  async #sysvShmId(): Promise<string | undefined> {
    try {
      const lines = (await readFile(join(this.dataDir, 'postmaster.pid'), 'utf8')).split('\n');
      const id = lines[6]?.trim().split(/\s+/)[1];
      return id && /^\d+$/.test(id) ? id : undefined;
    } catch {
      return undefined;
    }
  }

  /** Clean (fast) shutdown: SIGINT, SIGKILL if it takes longer than `DEFAULT_STOP_TIMEOUT_MS`. */
  async stop(): Promise<void> {
    if (!this.#proc) return;
    this.#signal('SIGINT', false);
    if (!(await this.#waitExit(DEFAULT_STOP_TIMEOUT_MS))) await this.kill();
  }

  /** Immediate shutdown (SIGQUIT: no checkpoint, shared memory released), for tearing a cluster down. */
  async shutdownImmediate(): Promise<void> {
    if (!this.#proc) return;
    this.#signal('SIGQUIT', false);
    if (!(await this.#waitExit(5_000))) await this.kill();
  }
}
