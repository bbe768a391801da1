/**
 * One device of the tour: a directory whose SQLite file is shared by a primary and secondary
 * worker processes (spawned, started, written through, synced, dumped, stopped), and `sameRows`,
 * the check that a device holds exactly the server's rows.
 */
import type { ItemRow, ListRow, readAll } from './device-schema.js';
import { DemoError } from './errors.js';
import { WorkerHandle } from './workers.js';

export type Dump = ReturnType<typeof readAll>;
interface SyncResult {
  pushed: number;
  pulled: number;
  bundles: number;
  conflicts: number;
  status: { pending: { total: number } } | null;
}

export const TENANT = 'acme';

export class Device {
  readonly workers: WorkerHandle[] = [];
  #n = 0;
  constructor(
    readonly name: string,
    readonly user: string,
    readonly dir: string,
    readonly server: string,
    readonly secret: string,
    readonly log: (who: string, line: string) => void,
  ) {}

  spawn(label: string): WorkerHandle {
    const w = new WorkerHandle({
      dir: this.dir,
      user: this.user,
      server: this.server,
      secret: this.secret,
      device: this.name,
      label,
      tenant: TENANT,
      mode: 'tour',
      onEvent: (h, e) => {
        const who = `${this.name}/${h.label}`;
        if (e.ev === 'burst-progress' && Number(e['acked']) % 100 === 0)
          this.log(who, `burst: ${e['acked']}/${e['count']} writes acknowledged`);
        if (e.ev === 'role' && e['previous'] !== 'starting' && e['role'] !== 'closed')
          this.log(who, `role ${e['previous']} → ${e['role']} (epoch ${e['epoch']})`);
        if (e.ev === 'sync-ready')
          this.log(
            who,
            `sync client attached: ${e['outcome']}${e['restore'] ? ` (restored ${JSON.stringify(e['restore'])})` : ''}`,
          );
        if (e.ev === 'conflict')
          this.log(who, `conflict on ${e['table']} ${JSON.stringify(e['key'])} → ${e['resolution']}`);
        if (e.ev === 'error') this.log(who, `error in ${e['where']}: ${e['message']}`);
      },
    });
    this.workers.push(w);
    return w;
  }

  /** Starts the first process (it wins the election and attaches), then two secondaries. */
  async start(): Promise<void> {
    const p = this.spawn('p');
    const started = await p.waitFor((e) => e.ev === 'started', 30_000, 'start');
    if (started['role'] !== 'primary')
      throw new DemoError('DEMO_DEVICE_FAILED', `${this.name}: first process is not primary`);
    await p.waitFor((e) => e.ev === 'sync-ready', 30_000, 'sync attach');
    const secs = [this.spawn('s1'), this.spawn('s2')];
    await Promise.all(secs.map((s) => s.waitFor((e) => e.ev === 'started', 30_000, 'start')));
    this.log(
      this.name,
      `3 processes up: primary pid ${p.pid}, secondaries ${secs.map((s) => s.pid).join(', ')}`,
    );
  }

  primary(): WorkerHandle {
    const p = this.workers.find((w) => w.alive && w.role === 'primary');
    if (!p) throw new DemoError('DEMO_DEVICE_FAILED', `${this.name}: no live primary`);
    return p;
  }

  secondaries(): WorkerHandle[] {
    return this.workers.filter((w) => w.alive && w.role === 'secondary');
  }

  nextLabel(): string {
    return `s${3 + this.#n++}`;
  }

  write(via: WorkerHandle, method: string, params: Record<string, unknown>) {
    return via.call<{ seq: number }>('write', { method, params });
  }

  async sync(rounds = 3): Promise<SyncResult> {
    return this.primary().call<SyncResult>('sync', { rounds }, 60_000);
  }

  dump(): Promise<Dump> {
    return this.primary().call<Dump>('dump');
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.stop()));
  }
}

function canonicalItems(items: readonly ItemRow[]): string {
  return JSON.stringify(
    [...items]
      .map((i) => ({
        id: i.id,
        list_id: i.list_id,
        title: i.title,
        done: Number(i.done),
        note: i.note,
        updated_by: i.updated_by,
      }))
      .sort((a, b) => a.id.localeCompare(b.id)),
  );
}
function canonicalLists(lists: readonly ListRow[]): string {
  return JSON.stringify(
    [...lists].map((l) => ({ id: l.id, name: l.name })).sort((a, b) => a.id.localeCompare(b.id)),
  );
}

/**
 * True when a device holds exactly the server's rows: same keys, same values (SQLite INTEGER and
 * PostgreSQL bigint compared as numbers), in any order.
 */
export function sameRows(
  device: { lists: readonly ListRow[]; items: readonly ItemRow[] },
  server: { lists: readonly ListRow[]; items: readonly ItemRow[] },
): boolean {
  return (
    canonicalItems(device.items) === canonicalItems(server.items) &&
    canonicalLists(device.lists) === canonicalLists(server.lists)
  );
}
