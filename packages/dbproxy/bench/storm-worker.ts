/** A failover-child.mjs process seen from the bench: its JSON lines, and a way to wait for one. */
import { fileURLToPath } from 'node:url';
import { type ChildHandle, spawnNode } from '@x/testkit';

const CHILD = fileURLToPath(new URL('./failover-child.mjs', import.meta.url));

/** Wall-clock ms with sub-ms resolution, comparable across processes of one host. */
export const now = (): number => performance.timeOrigin + performance.now();

// biome-ignore lint/suspicious/noExplicitAny: JSON lines from the workers
export type Json = Record<string, any>;

export class StormWorker {
  readonly handle: ChildHandle;
  readonly events: Json[] = [];
  exited = false;
  #listeners = new Set<() => void>();

  constructor(
    readonly name: string,
    db: string,
    rt: string,
    env: Record<string, string> = {},
  ) {
    const handle = spawnNode(CHILD, [db, rt, name], { env });
    this.handle = handle;
    void (async () => {
      for await (const line of handle.lines) {
        try {
          this.events.push(JSON.parse(line) as Json);
        } catch {
          continue;
        }
        this.#notify();
      }
    })();
    void handle.wait().then(() => {
      this.exited = true;
      this.#notify();
    });
  }

  #notify(): void {
    for (const l of [...this.#listeners]) l();
  }

  find(pred: (e: Json) => boolean): Json | undefined {
    return this.events.find(pred);
  }

  /** Resolves with the first event matching (or undefined when the process exits first). */
  until(pred: (e: Json) => boolean, timeoutMs: number): Promise<Json | undefined> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const e = this.find(pred);
        if (e !== undefined || this.exited) {
          this.#listeners.delete(check);
          clearTimeout(t);
          resolve(e);
        }
      };
      const t = setTimeout(() => {
        this.#listeners.delete(check);
        reject(new Error(`${this.name}: timed out; last events ${JSON.stringify(this.events.slice(-4))}`));
      }, timeoutMs);
      this.#listeners.add(check);
      check();
    });
  }

  get primaryEpoch(): number | null {
    const last = this.events.filter((e) => e['event'] === 'role').at(-1);
    if (last?.['role'] === 'primary') return last['epoch'] as number;
    const ready = this.find((e) => e['event'] === 'ready');
    return last === undefined && ready?.['role'] === 'primary' ? (ready['epoch'] as number) : null;
  }
}
