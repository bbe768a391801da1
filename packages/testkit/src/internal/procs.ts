import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { sleep } from '@x/core';

const execFileAsync = promisify(execFile);

/** pid → parent pid of every process (Linux: /proc; elsewhere: `ps`). */
async function parentMap(): Promise<Map<number, number>> {
  const parents = new Map<number, number>();
  if (process.platform === 'linux') {
    for (const name of await readdir('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      try {
        const stat = await readFile(`/proc/${name}/stat`, 'utf8');
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
        parents.set(Number(name), ppid);
      } catch {
        // gone meanwhile
      }
    }
    return parents;
  }
  const { stdout } = await execFileAsync('ps', ['-A', '-o', 'pid=,ppid=']);
  for (const line of stdout.split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (pid !== undefined && ppid !== undefined && Number.isInteger(pid)) parents.set(pid, ppid);
  }
  return parents;
}

/** Every descendant of `pid` (children, their children, …). */
export async function descendants(pid: number): Promise<number[]> {
  const parents = await parentMap();
  const found: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const current = queue.shift() as number;
    for (const [child, parent] of parents) {
      if (parent === current) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}

/** Alive and not a zombie. */
export async function isAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (process.platform !== 'linux') return true;
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves once none of `pids` is alive, or after `timeoutMs` (then false). */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let alive = false;
    for (const pid of pids) {
      if (await isAlive(pid)) {
        alive = true;
        break;
      }
    }
    if (!alive) return true;
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
}
