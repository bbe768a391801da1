import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { TestkitError } from './errors.js';
import { trackChild } from './internal/exit.js';
import { parseOptions } from './internal/options.js';

export interface ChildHandle {
  readonly pid: number;
  /** stdout, line by line; every iteration starts at the first line and ends when stdout closes. */
  readonly lines: AsyncIterable<string>;
  /** stderr collected so far (the last `MAX_STDERR_CHARS`), for diagnostics. */
  readonly stderr: string;
  /**
   * The first stdout line matching, not counting lines returned by earlier waitForLine calls (lines
   * printed before the call count). Rejects with TESTKIT_TIMEOUT or TESTKIT_CHILD_EXITED.
   */
  waitForLine(match: RegExp | ((line: string) => boolean), timeoutMs?: number): Promise<string>;
  /** Writes a line to stdin. */
  send(line: string): void;
  /** Sends a signal; default SIGKILL. */
  kill(signal?: NodeJS.Signals): void;
  /** Resolves when the process has exited and its output is drained. */
  wait(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface SpawnNodeOptions {
  env?: Record<string, string>;
  cwd?: string;
}

const spawnNodeOptions = z.strictObject({
  env: z.record(z.string(), z.string().optional()).optional(),
  cwd: z.string().min(1).optional(),
});

export const DEFAULT_WAIT_FOR_LINE_TIMEOUT_MS = 10_000;
export const MAX_STDERR_CHARS = 64 * 1024;

let tsxLoader: string | undefined;
function tsxImport(): string {
  tsxLoader ??= pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
  return tsxLoader;
}

/**
 * Runs `node [--import tsx] script ...args` (tsx for .ts/.mts/.cts scripts) with piped stdio.
 * The child is SIGKILLed if this process exits first.
 */
export function spawnNode(script: string, args: string[] = [], options: SpawnNodeOptions = {}): ChildHandle {
  const opts = parseOptions(spawnNodeOptions, options, 'spawnNode');
  const loader = /\.[mc]?ts$/.test(script) ? ['--import', tsxImport()] : [];
  const child: ChildProcess = spawn(process.execPath, [...loader, script, ...args], {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  trackChild(child);

  const lines: string[] = [];
  let stdoutDone = false;
  let stderr = '';
  let spawnError: Error | undefined;
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const l of [...listeners]) l();
  };

  child.stdin?.on('error', () => undefined);
  if (child.stdout) {
    const rl = createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY });
    rl.on('line', (line) => {
      lines.push(line);
      notify();
    });
    rl.on('close', () => {
      stdoutDone = true;
      notify();
    });
  } else {
    stdoutDone = true;
  }
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-MAX_STDERR_CHARS);
  });

  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => {
      spawnError = e;
      stdoutDone = true;
      notify();
      resolve({ code: null, signal: null });
    });
    child.once('close', (code, signal) => {
      stdoutDone = true;
      notify();
      resolve({ code, signal });
    });
  });

  let cursor = 0;
  const handle: ChildHandle = {
    pid: child.pid ?? -1,
    get stderr() {
      return stderr;
    },
    lines: {
      [Symbol.asyncIterator]() {
        let i = 0;
        return {
          next: () =>
            new Promise<IteratorResult<string>>((resolve) => {
              const check = () => {
                if (i < lines.length) {
                  listeners.delete(check);
                  resolve({ value: lines[i++] as string, done: false });
                } else if (stdoutDone) {
                  listeners.delete(check);
                  resolve({ value: undefined, done: true });
                }
              };
              listeners.add(check);
              check();
            }),
          return: () => Promise.resolve({ value: undefined, done: true }),
        };
      },
    },
    waitForLine(match, timeoutMs = DEFAULT_WAIT_FOR_LINE_TIMEOUT_MS) {
      const test = typeof match === 'function' ? match : (line: string) => match.test(line);
      return new Promise<string>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          listeners.delete(check);
          clearTimeout(timer);
        };
        const check = () => {
          while (cursor < lines.length) {
            const line = lines[cursor++] as string;
            if (test(line)) {
              done();
              resolve(line);
              return;
            }
          }
          if (stdoutDone) {
            done();
            reject(
              new TestkitError(
                'TESTKIT_CHILD_EXITED',
                `child ${script} ended its output before a matching line\n${stderr.slice(-2000)}`,
                {
                  details: { script, pid: child.pid, match: String(match) },
                  ...(spawnError ? { cause: spawnError } : {}),
                },
              ),
            );
          }
        };
        timer = setTimeout(() => {
          done();
          reject(
            new TestkitError(
              'TESTKIT_TIMEOUT',
              `no matching line from ${script} within ${timeoutMs} ms\n${stderr.slice(-2000)}`,
              {
                details: { script, pid: child.pid, match: String(match), timeoutMs },
              },
            ),
          );
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
    send(line) {
      child.stdin?.write(`${line}\n`);
    },
    kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    wait() {
      return exit;
    },
  };
  return handle;
}
