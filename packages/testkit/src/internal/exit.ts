import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';

/**
 * Nothing this package starts may outlive the process that started it.
 *
 * Two layers: an `exit` handler (normal exit, `process.exit()`), and a tiny detached watchdog process
 * connected over IPC that notices when this process dies in any way (SIGKILL, an unhandled SIGTERM
 * from a test runner tearing down its workers) and then stops the postmasters and removes the temp
 * directories itself. Postmasters get SIGQUIT (immediate shutdown, which also frees their System V
 * shared memory) and SIGKILL on their process group if they linger.
 */
const postmasters = new Set<number>();
const dirs = new Set<string>();
const children = new Set<ChildProcess>();
let installed = false;
let watchdog: ChildProcess | undefined;
let watchdogFailed = false;

type WatchdogMessage =
  | { op: 'pg+' | 'pg-' | 'child+' | 'child-'; pid: number }
  | { op: 'dir+' | 'dir-'; path: string };

const WATCHDOG_SOURCE = `
const fs = require('node:fs');
const pgs = new Set(), kids = new Set(), dirs = new Set();
const zombie = (p) => { try { return / Z /.test(fs.readFileSync('/proc/' + p + '/stat', 'utf8').replace(/^.*[)]/, '')); } catch { return false; } };
const alive = (p) => { try { process.kill(p, 0); return !zombie(p); } catch { return false; } };
process.on('message', (m) => {
  if (m.op === 'pg+') pgs.add(m.pid); else if (m.op === 'pg-') pgs.delete(m.pid);
  else if (m.op === 'child+') kids.add(m.pid); else if (m.op === 'child-') kids.delete(m.pid);
  else if (m.op === 'dir+') dirs.add(m.path); else if (m.op === 'dir-') dirs.delete(m.path);
});
process.on('disconnect', async () => {
  for (const p of kids) { try { process.kill(p, 'SIGKILL'); } catch {} }
  for (const p of pgs) { try { process.kill(p, 'SIGQUIT'); } catch {} }
  const end = Date.now() + 3000;
  while ([...pgs].some(alive) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  for (const p of pgs) { if (alive(p)) { try { process.kill(-p, 'SIGKILL'); } catch {} } }
  for (const d of dirs) { try { fs.rmSync(d, { recursive: true, force: true }); } catch {} }
  process.exit(0);
});
`;

function tell(message: WatchdogMessage): void {
  if (watchdogFailed) return;
  if (!watchdog) {
    try {
      const env = { ...process.env };
      delete env.NODE_OPTIONS;
      watchdog = spawn(process.execPath, ['-e', WATCHDOG_SOURCE], {
        detached: true,
        stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
        env,
      });
      watchdog.on('error', () => {
        watchdogFailed = true;
      });
      watchdog.unref();
      watchdog.channel?.unref();
    } catch {
      watchdogFailed = true;
      return;
    }
  }
  if (watchdog.connected) watchdog.send(message, () => undefined);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.once('exit', () => {
    for (const child of children) {
      try {
        child.kill('SIGKILL');
      } catch {}
    }
    for (const pid of postmasters) {
      try {
        process.kill(pid, 'SIGQUIT');
      } catch {}
    }
    for (const dir of dirs) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {}
    }
  });
}

export function trackPostmaster(pid: number): void {
  install();
  postmasters.add(pid);
  tell({ op: 'pg+', pid });
}
export function untrackPostmaster(pid: number): void {
  if (postmasters.delete(pid)) tell({ op: 'pg-', pid });
}
export function trackDir(path: string): void {
  install();
  dirs.add(path);
  tell({ op: 'dir+', path });
}
export function untrackDir(path: string): void {
  if (dirs.delete(path)) tell({ op: 'dir-', path });
}
export function trackChild(child: ChildProcess): void {
  install();
  if (child.pid === undefined) return;
  children.add(child);
  tell({ op: 'child+', pid: child.pid });
  child.once('exit', () => {
    children.delete(child);
    if (child.pid !== undefined) tell({ op: 'child-', pid: child.pid });
  });
}
