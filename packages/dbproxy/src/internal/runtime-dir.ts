/** Paths keyed by the database (runtime directory, endpoints, info file) and the primary's info file. */
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { DbProxyError } from '../errors.js';

/**
 * The database's canonical path: the real path of its directory plus its file name (the file itself
 * may not exist yet). Two spellings of one file give one key, so one election.
 */
export function resolveDatabasePath(databasePath: string): string {
  const abs = resolve(databasePath);
  let dir: string;
  try {
    dir = realpathSync(dirname(abs));
  } catch (e) {
    throw new DbProxyError('DBPROXY_INVALID_OPTIONS', 'the database directory does not exist', {
      details: { databasePath },
      cause: e,
    });
  }
  const full = join(dir, basename(abs));
  try {
    return realpathSync(full); // follows a symlinked database file
  } catch {
    return full;
  }
}

/** A short stable key of the resolved database path, used in endpoint and info file names. */
export function databaseKey(resolvedDbPath: string): string {
  return createHash('sha256').update(resolvedDbPath).digest('hex').slice(0, 16);
}

/** Longest runtime directory path that still leaves room for the socket file names. */
export const MAX_RUNTIME_DIR_BYTES = 70;

/** Creates the runtime directory 0700, or checks an existing one is ours and private (fixing its mode). */
export function ensureRuntimeDir(dir: string): string {
  const abs = resolve(dir);
  // Unix socket paths are limited (108 bytes on Linux, 104 on macOS); leave room for
  // `/<16 hex>-<epoch>.rpc`.
  if (Buffer.byteLength(abs) > MAX_RUNTIME_DIR_BYTES) {
    throw new DbProxyError(
      'DBPROXY_RUNTIME_DIR',
      `runtime directory path is too long for ipc:// endpoints (${Buffer.byteLength(abs)} > ${MAX_RUNTIME_DIR_BYTES} bytes)`,
      { details: { runtimeDir: abs } },
    );
  }
  try {
    mkdirSync(abs, { recursive: true, mode: 0o700 });
    const st = lstatSync(abs);
    if (!st.isDirectory()) throw new Error('not a directory');
    const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
    if (st.uid !== uid) throw new Error(`owned by uid ${st.uid}, not ${uid}`);
    if ((st.mode & 0o077) !== 0) chmodSync(abs, 0o700);
  } catch (e) {
    throw new DbProxyError(
      'DBPROXY_RUNTIME_DIR',
      `runtime directory ${abs} is unusable: ${(e as Error).message}`,
      {
        details: { runtimeDir: abs },
        cause: e,
      },
    );
  }
  return abs;
}

/** What the primary publishes once its sockets are bound. */
export const primaryInfoSchema = z.object({
  version: z.literal(1),
  dbPath: z.string(),
  endpoints: z.object({ rpc: z.string(), pub: z.string() }),
  epoch: z.number().int().positive(),
  pid: z.number().int().positive(),
  token: z.string().min(16),
  instanceId: z.string(),
  startedAt: z.number(),
});
export type PrimaryInfo = z.infer<typeof primaryInfoSchema>;

/**
 * `<database>-dbproxy.json`, beside the database and the election lock: keyed by the database's
 * real path like the lock, so every process finds it whatever runtime directory it was given.
 * It is 0600, so only the same user can read the token it holds.
 */
export function infoPathFor(resolvedDbPath: string): string {
  return `${resolvedDbPath}-dbproxy.json`;
}

export function endpointsFor(runtimeDir: string, key: string, epoch: number): PrimaryInfo['endpoints'] {
  return {
    rpc: `ipc://${join(runtimeDir, `${key}-${epoch}.rpc`)}`,
    pub: `ipc://${join(runtimeDir, `${key}-${epoch}.pub`)}`,
  };
}

/** Writes the file atomically: a 0600 temp file in the same directory, then rename over the target. */
export function writeFileAtomic(path: string, content: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, content, { mode: 0o600, flag: 'wx' });
  try {
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {}
    throw e;
  }
}

/** Reads the info file; `null` when missing or unreadable (treated as "no primary yet", never as "be primary"). */
export function readPrimaryInfo(path: string): PrimaryInfo | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return null;
  }
  try {
    const parsed = primaryInfoSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

export function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {}
}

/** Socket files of epochs below `belowEpoch` (dead primaries) are litter; removes them. */
export function removeEndpointFiles(runtimeDir: string, key: string, belowEpoch: number): void {
  try {
    for (const f of readdirSync(runtimeDir)) {
      const m = /^([0-9a-f]{16})-(\d+)\.(rpc|pub)$/.exec(f);
      if (m !== null && m[1] === key && Number(m[2]) < belowEpoch) removeQuietly(join(runtimeDir, f));
    }
  } catch {}
}
