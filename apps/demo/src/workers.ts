/** Spawning and driving device processes (the tour and `demo device` use this). */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { DeviceWorkerOptions } from './device-worker.js';
import { DemoError } from './errors.js';

export type WorkerEvent = Record<string, unknown> & { ev: string; t: number };

const self = fileURLToPath(import.meta.url);
const fromSource = self.endsWith('.ts');
/** This app's CLI entry (TS source under tests, `dist/cli.js` otherwise). */
export const CLI_PATH = join(dirname(self), fromSource ? 'cli.ts' : 'cli.js');

export interface WorkerSpawnOptions extends Omit<DeviceWorkerOptions, 'intervalMs'> {
  intervalMs?: number;
  /** Every stdout event of the worker. */
  onEvent?: (w: WorkerHandle, e: WorkerEvent) => void;
}

export class WorkerHandle {
  readonly label: string;
  readonly device: string;
  readonly child: ChildProcess;
  role = 'starting';
  alive = true;
  readonly events: WorkerEvent[] = [];
  #nextId = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #waiters = new Set<{
    pred: (e: WorkerEvent) => boolean;
    resolve: (e: WorkerEvent) => void;
    reject: (e: Error) => void;
  }>();
  #closed = false;
  #stderr = '';
  readonly exited: Promise<number | null>;

  constructor(o: WorkerSpawnOptions) {
    this.label = o.label;
    this.device = o.device;
    mkdirSync(o.dir, { recursive: true });
    const args = [
      ...(fromSource ? ['--import', 'tsx'] : []),
      CLI_PATH,
      '__worker',
      '--dir',
      o.dir,
      '--user',
      o.user,
      '--server',
      o.server,
      '--device',
      o.device,
      '--label',
      o.label,
      '--tenant',
      o.tenant,
      '--mode',
      o.mode,
      '--interval',
      String(o.intervalMs ?? 0),
    ];
    this.child = spawn(process.execPath, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, DEMO_JWT_SECRET: o.secret },
    });
    this.child.stderr?.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-8000);
    });
    const rl = createInterface({ input: this.child.stdout! });
    rl.on('line', (line) => {
      let e: WorkerEvent;
      try {
        e = JSON.parse(line) as WorkerEvent;
      } catch {
        return;
      }
      this.events.push(e);
      if (e.ev === 'role' || e.ev === 'started') this.role = String(e['role']);
      if (e.ev === 'reply') {
        const p = this.#pending.get(Number(e['id']));
        if (p) {
          this.#pending.delete(Number(e['id']));
          if (e['ok']) p.resolve(e['result']);
          else
            p.reject(
              new DemoError('DEMO_DEVICE_FAILED', `${this.device}/${this.label}: ${String(e['error'])}`, {
                details: { code: e['code'] },
              }),
            );
        }
      }
      for (const w of this.#waiters) {
        if (w.pred(e)) {
          this.#waiters.delete(w);
          w.resolve(e);
        }
      }
      o.onEvent?.(this, e);
    });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code) => {
        this.alive = false;
        this.role = 'dead';
        for (const p of this.#pending.values())
          p.reject(new DemoError('DEMO_DEVICE_FAILED', `${this.device}/${this.label} exited (${code})`));
        this.#pending.clear();
        resolve(code);
      });
      // After its output is fully read: nothing a waiter waits for can arrive any more.
      this.child.once('close', (code, signal) => {
        this.#closed = true;
        for (const w of this.#waiters)
          w.reject(
            new DemoError(
              'DEMO_DEVICE_FAILED',
              `${this.device}/${this.label} exited (${code ?? signal})\n${this.#stderr}`,
            ),
          );
        this.#waiters.clear();
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get stderr(): string {
    return this.#stderr;
  }

  call<T = unknown>(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<T> {
    if (!this.alive)
      return Promise.reject(new DemoError('DEMO_DEVICE_FAILED', `${this.device}/${this.label} is dead`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(
          new DemoError('DEMO_TIMEOUT', `${this.device}/${this.label}: ${cmd} timed out\n${this.#stderr}`),
        );
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, ...args })}\n`);
    });
  }

  /** Resolves with the first event (already seen or future) matching `pred`. */
  waitFor(pred: (e: WorkerEvent) => boolean, timeoutMs = 30_000, what = 'event'): Promise<WorkerEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.#closed) {
      return Promise.reject(
        new DemoError('DEMO_DEVICE_FAILED', `${this.device}/${this.label} has exited\n${this.#stderr}`),
      );
    }
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (e: WorkerEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        reject(
          new DemoError(
            'DEMO_TIMEOUT',
            `${this.device}/${this.label}: no ${what} within ${timeoutMs} ms\n${this.#stderr}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.add(w);
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.alive) this.child.kill(signal);
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    await this.call('exit', {}, 5_000).catch(() => {});
    const timer = setTimeout(() => this.kill(), 5_000);
    await this.exited;
    clearTimeout(timer);
  }
}
