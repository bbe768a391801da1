import { createSyncClient, type SyncClient, type SyncClientOptionsInput } from '@x/oversync/client';
import Database from 'better-sqlite3';
import { CLIENT_TABLES, SQLITE_BUSINESS_DDL } from './schema.js';

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
): Device {
  const db = new Database(path);
  db.exec(SQLITE_BUSINESS_DDL);
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
    tables: CLIENT_TABLES,
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
export function snapshot(db: Database.Database): Record<string, unknown> {
  return Object.fromEntries(CLIENT_TABLES.map((t) => [t.table, rows(db, t.table)]));
}
