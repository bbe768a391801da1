import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { trackDir, untrackDir } from './internal/exit.js';
import { parseOptions } from './internal/options.js';

export interface TempDir {
  readonly path: string;
  /** Removes the directory and everything in it; idempotent. */
  cleanup(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface TempSqlite {
  readonly dir: string;
  /** The database file path (not created: open it with your driver). */
  readonly path: string;
  /** Removes the directory, the database and its -wal/-shm/-journal files; idempotent. */
  cleanup(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export const DEFAULT_TEMP_PREFIX = 'tmp';
export const DEFAULT_SQLITE_NAME = 'db.sqlite';

/** A fresh directory under the OS temp dir, removed by cleanup() (or when the process exits). */
export async function tempDir(prefix: string = DEFAULT_TEMP_PREFIX): Promise<TempDir> {
  parseOptions(z.string().regex(/^[\w.-]{1,40}$/, '1..40 of [A-Za-z0-9_.-]'), prefix, 'tempDir prefix');
  const path = await mkdtemp(join(tmpdir(), `x-testkit-${prefix}-`));
  trackDir(path);
  let cleaning: Promise<void> | undefined;
  const cleanup = () => {
    cleaning ??= rm(path, { recursive: true, force: true, maxRetries: 3 }).then(() => untrackDir(path));
    return cleaning;
  };
  return Object.freeze({ path, cleanup, [Symbol.asyncDispose]: cleanup });
}

/** A database file path in a fresh temp directory; cleanup() removes it with its side files. */
export async function tempSqlite(name: string = DEFAULT_SQLITE_NAME): Promise<TempSqlite> {
  parseOptions(z.string().regex(/^[\w.-]{1,100}$/, 'a plain file name'), name, 'tempSqlite name');
  const dir = await tempDir('sqlite');
  return Object.freeze({
    dir: dir.path,
    path: join(dir.path, name),
    cleanup: dir.cleanup,
    [Symbol.asyncDispose]: dir.cleanup,
  });
}
