import { constants } from 'node:fs';
import { chown, copyFile, lchown, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface RunAs {
  uid: number;
  gid: number;
}

function isMissing(e: unknown): boolean {
  return (e as NodeJS.ErrnoException).code === 'ENOENT';
}

/**
 * Copies a directory tree that may be changing while it is read (a live PostgreSQL data directory):
 * files that vanish mid-copy are skipped. `skip(rel)` returns 'skip' to leave an entry out, or
 * 'empty' to create a directory but leave its contents out.
 */
export async function copyTree(
  from: string,
  to: string,
  skip: (rel: string) => 'copy' | 'skip' | 'empty' = () => 'copy',
  rel = '',
  dirMode = 0o700,
): Promise<void> {
  await mkdir(to, { recursive: true, mode: dirMode });
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(from, { withFileTypes: true });
  } catch (e) {
    if (isMissing(e)) return;
    throw e;
  }
  for (const entry of entries) {
    const childRel = rel === '' ? entry.name : `${rel}/${entry.name}`;
    const decision = skip(childRel);
    if (decision === 'skip') continue;
    const src = join(from, entry.name);
    const dst = join(to, entry.name);
    try {
      if (entry.isDirectory()) {
        if (decision === 'empty') await mkdir(dst, { recursive: true, mode: dirMode });
        else await copyTree(src, dst, skip, childRel, dirMode);
      } else if (entry.isSymbolicLink()) {
        await symlink(await readlink(src), dst);
      } else if (entry.isFile()) {
        await copyFile(src, dst, constants.COPYFILE_FICLONE);
      }
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
  }
}

/** chown -R (used when running as root: the server runs as the `postgres` user). */
export async function chownTree(path: string, owner: RunAs): Promise<void> {
  const st = await lstat(path);
  if (st.isSymbolicLink()) {
    await lchown(path, owner.uid, owner.gid);
    return;
  }
  await chown(path, owner.uid, owner.gid);
  if (st.isDirectory()) {
    for (const name of await readdir(path)) await chownTree(join(path, name), owner);
  }
}
