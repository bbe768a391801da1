import {
  createSyncClient,
  isClientError,
  type SyncClient,
  type SyncClientOptionsInput,
} from '@x/oversync/client';
import Database from 'better-sqlite3';
import { BUSINESS_SCHEMA, CLIENT_TABLES, type TestSchema } from './schema.js';

export interface Device {
  readonly name: string;
  readonly path: string;
  readonly db: Database.Database;
  readonly client: SyncClient;
  /** Toggle to make the device's HTTP edge fail like a dead network. */
  offline: boolean;
  /** The user the device authenticates as (read per request). */
  user: string;
  close(): Promise<void>;
}

export type DeviceOptions = Partial<Omit<SyncClientOptionsInput, 'writer' | 'baseUrl' | 'schema' | 'tables'>>;

/** A device: a real SQLite file with the business schema and a sync client over it. */
export function openDevice(
  name: string,
  path: string,
  baseUrl: string,
  user: string,
  opts: DeviceOptions = {},
  schema: TestSchema = BUSINESS_SCHEMA,
): Device {
  const db = new Database(path);
  db.exec(schema.sqlite);
  const device: Device = {
    name,
    path,
    db,
    offline: false,
    user,
    client: undefined as unknown as SyncClient,
    async close() {
      await device.client.close();
      db.close();
    },
  };
  const realFetch = opts.fetch ?? ((u: string, i: RequestInit) => globalThis.fetch(u, i));
  (device as { client: SyncClient }).client = createSyncClient({
    writer: db,
    baseUrl,
    token: () => device.user,
    schema: 'business',
    tables: schema.tables.map((t) => ({ table: t.table, syncKeyColumns: [...t.syncKeyColumns] })),
    retry: { initialBackoffMs: 5, maxBackoffMs: 20 },
    ...opts,
    fetch: (u, i) => {
      if (device.offline) return Promise.reject(new TypeError('fetch failed: device offline'));
      return realFetch(u, i);
    },
  });
  return device;
}

export function rows(db: Database.Database, table: string): Array<Record<string, unknown>> {
  return db.prepare(`SELECT * FROM ${table} ORDER BY id`).all() as Array<Record<string, unknown>>;
}

/** Every business table of a device, for equality checks. */
export function snapshot(
  db: Database.Database,
  tables: TestSchema['tables'] = CLIENT_TABLES,
): Record<string, unknown> {
  return Object.fromEntries(tables.map((t) => [t.table, rows(db, t.table)]));
}

/** `sync()`, where an offline device may fail at the network edge; everything else is a bug. */
export async function trySync(d: Device): Promise<void> {
  try {
    await d.client.sync();
  } catch (e) {
    const networkError =
      isClientError(e, 'OVERSYNC_CLIENT_RETRY_EXHAUSTED') || isClientError(e, 'OVERSYNC_CLIENT_NETWORK');
    if (!(d.offline && networkError)) throw e;
  }
}

/** Plays one network command of a property test: sync, go offline, come back online. */
export async function networkOp(d: Device, kind: 'sync' | 'offline' | 'online'): Promise<void> {
  if (kind === 'sync') await trySync(d);
  else d.offline = kind === 'offline';
}
