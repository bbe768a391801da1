/**
 * The election lock holder's liveness, for replacing a stalled primary. Right after it wins the
 * lock, the holder writes `<database>-dbproxy.alive` = `{ pid, epoch }` and a worker thread touches
 * the file's mtime every heartbeat interval. The worker has its own event loop, so a primary busy in
 * a long synchronous job keeps beating; a process that is stopped (SIGSTOP, a debugger, a swap
 * storm stalling every thread) does not. A secondary that finds the lock held and the file silent
 * for longer than the stall timeout ends the holder (see README: fencing).
 */
import { readFileSync, statSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { writeFileAtomic } from './runtime-dir.js';

/** `<database>-dbproxy.alive`: beside the database, like the lock and the info file. */
export function leasePathFor(resolvedDbPath: string): string {
  return `${resolvedDbPath}-dbproxy.alive`;
}

export interface LeaseView {
  pid: number;
  epoch: number;
  /** How long ago the holder last beat (by the file's mtime; same host, same clock). */
  silentMs: number;
}

// CommonJS: an eval'd worker has `require`. Touches the file's times; any error is ignored (the
// file may be replaced by the next holder).
const BEAT = `
const { workerData } = require('node:worker_threads');
const { utimesSync } = require('node:fs');
setInterval(() => {
  const t = new Date();
  try { utimesSync(workerData.path, t, t); } catch {}
}, workerData.intervalMs);
`;

/** The holder's side: writes the lease and starts the beating thread. `stop()` ends the thread. */
export function startLease(path: string, epoch: number, intervalMs: number): { stop(): Promise<void> } {
  writeFileAtomic(path, JSON.stringify({ pid: process.pid, epoch }));
  const worker = new Worker(BEAT, { eval: true, workerData: { path, intervalMs } });
  worker.unref();
  worker.on('error', () => {});
  let stopped: Promise<void> | null = null;
  return {
    stop() {
      stopped ??= worker.terminate().then(
        () => undefined,
        () => undefined,
      );
      return stopped;
    },
  };
}

/** A secondary's view of the lease, or null when there is none (or it cannot be read yet). */
export function readLease(path: string): LeaseView | null {
  try {
    const mtimeMs = statSync(path).mtimeMs;
    const v = JSON.parse(readFileSync(path, 'utf8')) as { pid?: unknown; epoch?: unknown };
    if (typeof v.pid !== 'number' || typeof v.epoch !== 'number') return null;
    return { pid: v.pid, epoch: v.epoch, silentMs: Date.now() - mtimeMs };
  } catch {
    return null;
  }
}
