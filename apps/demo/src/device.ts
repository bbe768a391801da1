/** `demo device`: one device directory, a primary and two secondary processes, syncing in the background. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { DEVICE_DB_FILE } from './device-worker.js';
import { DemoError, type DemoErrorCode } from './errors.js';
import { log } from './log.js';
import { HydrateBar } from './progress-bar.js';
import { type WorkerEvent, WorkerHandle } from './workers.js';

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
/** The file naming the user a device directory belongs to (written by its first run). */
export const DEVICE_OWNER_FILE = 'owner.json';

/** The user whose data is in `dir`: its owner file, else the sync client's attached user in the file. */
export function deviceOwner(dir: string): string | null {
  const ownerPath = join(dir, DEVICE_OWNER_FILE);
  if (existsSync(ownerPath)) {
    const o = JSON.parse(readFileSync(ownerPath, 'utf8')) as { user?: unknown };
    if (typeof o.user === 'string') return o.user;
  }
  const dbPath = join(dir, DEVICE_DB_FILE);
  if (!existsSync(dbPath)) return null;
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const r = db
      .prepare(
        `SELECT attached_user_id AS u FROM _sync_attachment_state WHERE singleton_key = 1 AND binding_state = 'attached'`,
      )
      .get() as { u?: string } | undefined;
    return r?.u ? r.u : null;
  } catch {
    return null; // no sync tables yet: nobody has synced from it
  } finally {
    db.close();
  }
}

/** Refuses a directory that holds another user's data; claims a new one for `user`. */
export function claimDeviceDir(dir: string, user: string): void {
  mkdirSync(dir, { recursive: true });
  const owner = deviceOwner(dir);
  if (owner !== null && owner !== user) {
    throw new DemoError(
      'DEMO_DEVICE_OWNED_BY_OTHER_USER',
      `demo device: ${dir} belongs to user ${JSON.stringify(owner)}, not ${JSON.stringify(user)}; give ${JSON.stringify(user)} a directory of their own`,
      { details: { dir, owner, user } },
    );
  }
  if (!existsSync(join(dir, DEVICE_OWNER_FILE)))
    writeFileSync(
      join(dir, DEVICE_OWNER_FILE),
      `${JSON.stringify({ user, since: new Date().toISOString() })}\n`,
    );
}

/** One readable line per event worth showing (writes and replies are not). */
function describe(e: WorkerEvent): string | null {
  const { ev, t: _t, ...rest } = e;
  switch (ev) {
    case 'wrote':
    case 'reply':
      return null;
    case 'sync-error':
      return `sync error (${String(e['where'])}): ${String(e['code'])} ${String(e['message'])}${
        e['cause'] ? ` (cause: ${String(e['cause'])})` : ''
      }; retrying${typeof e['retryInMs'] === 'number' ? `, next attempt in ${e['retryInMs']} ms` : ''} (repeats are not logged)`;
    case 'sync-recovered':
      return `sync ${String(e['where'])} works again after ${String(e['failures'])} failure(s)`;
    case 'progress':
      return `progress: pushed ${String(e['pushed'])}, pulled ${String(e['pulled'])}, pending ${String(e['pending'])} (bundle ${String(e['lastBundleSeqSeen'])})`;
    case 'sync-ready':
      return `synced with the server (${String(e['outcome'])})`;
    default:
      return `${ev} ${JSON.stringify(rest)}`;
  }
}

export async function runDevice(o: RunDeviceOptions): Promise<number> {
  claimDeviceDir(o.dir, o.user);
  const workers: WorkerHandle[] = [];
  let fatal: DemoError | null = null;
  let stopping = false;
  let stop: () => void = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const bar = new HydrateBar(process.stdout);
  const spawnOne = (label: string) => {
    const w = new WorkerHandle({
      ...o,
      label,
      mode: 'auto',
      onEvent: (h, e) => {
        if (e.ev === 'fatal') {
          fatal ??= new DemoError(e['code'] as DemoErrorCode, `demo device: ${String(e['message'])}`);
          stop();
          return;
        }
        const who = `${o.device}/${h.label}`;
        if (e.ev === 'hydrate-progress') {
          const ts = new Date().toISOString().slice(11, 23);
          bar.update(`${ts} ${who.padEnd(12)} `, {
            phase: String(e['phase']),
            stage: String(e['stage']),
            done: Number(e['done']),
            total: Number(e['total']),
          });
          return;
        }
        bar.end();
        const line = describe(e);
        if (line !== null) log(who, line);
      },
    });
    workers.push(w);
    void w.exited.then((code) => {
      bar.end();
      log(`${o.device}/${label}`, `exited (${code})`);
      if (!stopping && fatal === null) {
        // Keep three processes: a replacement joins as a secondary.
        setTimeout(() => spawnOne(`${label}+`), 500);
      }
    });
    return w;
  };
  const first = spawnOne(DEVICE_LABELS[0]);
  await first.waitFor((e) => e.ev === 'started', 30_000, 'start');
  for (const l of DEVICE_LABELS.slice(1)) spawnOne(l);
  bar.end();
  log(o.device, `running in ${o.dir} as ${o.user} against ${o.server} (Ctrl-C to stop)`);
  process.once('SIGINT', () => stop());
  process.once('SIGTERM', () => stop());
  await stopped;
  stopping = true;
  await Promise.all(workers.map((w) => w.stop()));
  if (fatal) throw fatal;
  return 0;
}
