/** Whether a process is alive (a zombie counts as dead). */
import { readFileSync } from 'node:fs';

/**
 * Whether `pid` is a live process. A killed process stays signalable until its parent reaps it;
 * on Linux, /proc tells a zombie (`Z`) or a dying one (`X`) from a live one.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  if (process.platform !== 'linux') return true;
  try {
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last ')'
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const at = stat.lastIndexOf(')') + 2;
    const state = stat.slice(at, at + 1);
    return state !== 'Z' && state !== 'X';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT'; // gone since the signal check
  }
}
