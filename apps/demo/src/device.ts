/** `demo device`: one device directory, a primary and two secondary processes, syncing in the background. */
import { log } from './log.js';
import { WorkerHandle } from './workers.js';

export interface RunDeviceOptions {
  dir: string;
  user: string;
  server: string;
  tenant: string;
  intervalMs: number;
  device: string;
  secret: string;
}

export const DEVICE_LABELS = ['p', 's1', 's2'] as const;

export async function runDevice(o: RunDeviceOptions): Promise<number> {
  const workers: WorkerHandle[] = [];
  const spawnOne = (label: string) => {
    const w = new WorkerHandle({
      ...o,
      label,
      mode: 'auto',
      onEvent: (h, e) => {
        if (e.ev === 'wrote' || e.ev === 'reply') return;
        const { ev, t: _t, ...rest } = e;
        log(`${o.device}/${h.label}`, `${ev} ${JSON.stringify(rest)}`);
      },
    });
    workers.push(w);
    void w.exited.then((code) => {
      log(`${o.device}/${label}`, `exited (${code})`);
      if (!stopping) {
        // Keep three processes: a replacement joins as a secondary.
        setTimeout(() => spawnOne(`${label}+`), 500);
      }
    });
    return w;
  };
  let stopping = false;
  const first = spawnOne(DEVICE_LABELS[0]);
  await first.waitFor((e) => e.ev === 'started', 30_000, 'start');
  for (const l of DEVICE_LABELS.slice(1)) spawnOne(l);
  log(o.device, `running in ${o.dir} as ${o.user} against ${o.server} (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  stopping = true;
  await Promise.all(workers.map((w) => w.stop()));
  return 0;
}
