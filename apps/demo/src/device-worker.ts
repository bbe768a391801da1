/**
 * One process of a device. Every process of a device runs this same code over the device's one
 * SQLite file: dbproxy elects the primary (it owns the write coordinator and runs the sync
 * client); the others are secondaries that read their own connection and forward writes. When
 * the primary dies, a secondary wins the election and starts the sync client where it stopped.
 *
 * Control: JSON commands on stdin (`{ id, cmd, ... }`), JSON lines on stdout (`{ ev, ... }`).
 */

import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createDbProxy, type DbProxy, EXCLUSIVE_METRICS_KEY } from '@x/dbproxy';
import { createSyncClient, type SyncClient, watchQuery } from '@x/oversync/client';
import type { SqliteDatabase } from '@x/writecoordinator';
import { Backoff, mergeResolver } from './device-policy.js';
import { businessWrites, DEFAULT_SQLITE_DDL, readAll } from './device-schema.js';
import { causeLine, type DemoErrorCode } from './errors.js';
import { signJwt } from './jwt.js';
import { clientTables, defaultProfile } from './profiles.js';
import { syncWriter } from './sync-writer.js';

export interface DeviceWorkerOptions {
  dir: string;
  user: string;
  server: string;
  secret: string;
  /** Device name (the JWT `did`). */
  device: string;
  /** Process label within the device, e.g. `p`, `s1`, `s2`. */
  label: string;
  /** PostgreSQL schema (tenant) of the user's business tables. */
  tenant: string;
  /** 'tour': explicit commands only; 'auto': background sync plus a write every `intervalMs`. */
  mode: 'tour' | 'auto';
  intervalMs: number;
}

export const DEVICE_DB_FILE = 'device.db';
/** First and longest wait between a background device's attempts to reach the server. */
export const DEVICE_RETRY_MIN_MS = 250;
export const DEVICE_RETRY_MAX_MS = 10_000;
/** A snapshot's (hydrate's) progress is reported at most this often (stage edges always). */
const HYDRATE_PROGRESS_MS = 200;
/** A background device reports its progress (when it changed) at most this often. */
export const PROGRESS_EVERY_MS = 5_000;
export const OFFLINE_FLAG_FILE = 'offline';

const out = (o: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);

/** An error that retrying cannot fix (a refused token, an unknown tenant): the device stops with its code. */
class FatalDeviceError extends Error {
  constructor(
    readonly code: DemoErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Reports sync errors as `sync-error` events: each distinct error (code and cause) of a loop once,
 * however often it repeats, and `sync-recovered` (with the number of failures) when the loop works again.
 */
export class SyncErrorReporter {
  #current = new Map<string, { key: string; count: number }>();
  #lastAt = 0;
  last: string | null = null;
  report(where: string, error: unknown, retryInMs?: number): void {
    this.#lastAt = Date.now();
    const code = String(
      (error as { code?: unknown })?.code ?? (error instanceof Error ? error.name : 'Error'),
    );
    const message = error instanceof Error ? error.message : String(error);
    const cause = causeLine(error);
    const key = `${code}|${message}|${cause}`;
    const cur = this.#current.get(where);
    if (cur?.key === key) {
      cur.count++;
      return;
    }
    this.#current.set(where, { key, count: 1 });
    this.last = `${code}: ${cause || message}`;
    out({
      ev: 'sync-error',
      where,
      code,
      message,
      cause: cause === message ? null : cause,
      ...(retryInMs === undefined ? {} : { retryInMs }),
    });
  }
  recovered(where: string): void {
    const cur = this.#current.get(where);
    if (!cur) return;
    this.#current.delete(where);
    if (this.#current.size === 0) this.last = null;
    out({ ev: 'sync-recovered', where, failures: cur.count });
  }
  /** Background loops that have not failed for `ms` are taken as working again. */
  quietFor(ms: number): void {
    if (this.#current.size > 0 && Date.now() - this.#lastAt > ms)
      for (const where of [...this.#current.keys()]) this.recovered(where);
  }
}

export async function runDeviceWorker(o: DeviceWorkerOptions): Promise<void> {
  mkdirSync(o.dir, { recursive: true });
  const offlinePath = join(o.dir, OFFLINE_FLAG_FILE);
  // The primary's writer connection, handed to `migrate` when this process is promoted.
  let writerDb: SqliteDatabase | null = null;
  const proxy: DbProxy = createDbProxy({
    databasePath: join(o.dir, DEVICE_DB_FILE),
    runtimeDir: join(o.dir, 'run'),
    instanceId: `${o.device}/${o.label}`,
    writes: businessWrites(),
    migrate: (db) => {
      db.exec(DEFAULT_SQLITE_DDL);
      writerDb = db;
    },
  });

  let client: SyncClient | null = null;
  let clientReady: Promise<SyncClient> | null = null;
  let conflicts = 0;
  let tokenCache: { token: string; until: number } | null = null;
  const token = async () => {
    if (tokenCache === null || tokenCache.until < Date.now()) {
      tokenCache = {
        token: await signJwt(o.secret, { sub: o.user, did: o.device, ttlSeconds: 3600 }),
        until: Date.now() + 3_000_000,
      };
    }
    return tokenCache.token;
  };

  const reporter = new SyncErrorReporter();
  const progress = { pushed: 0, pulled: 0 };
  const lastHydrate = { at: 0 };

  /**
   * The server's answer to `capabilities`: a refused token or a tenant the server does not serve
   * will not get better by retrying, so they end the device (`fatal`) with their own code.
   */
  const checkServer = async (sourceId: string): Promise<void> => {
    const r = await fetch(`${o.server}/sync/capabilities`, {
      headers: { authorization: `Bearer ${await token()}`, 'oversync-source-id': sourceId },
    });
    if (r.status === 401 || r.status === 403)
      throw new FatalDeviceError(
        'DEMO_UNAUTHORIZED',
        `the server at ${o.server} refused the device's token (HTTP ${r.status}): is DEMO_JWT_SECRET the server's secret?`,
      );
    if (!r.ok) throw new Error(`HTTP ${r.status} from ${o.server}/sync/capabilities`);
    const caps = (await r.json()) as { registered_tables?: string[] };
    const tables = caps.registered_tables ?? [];
    const missing = defaultProfile.tables.filter((t) => !tables.includes(`${o.tenant}.${t.table}`));
    if (missing.length > 0) {
      const tenants = [...new Set(tables.map((t) => t.split('.')[0]))].join(', ');
      throw new FatalDeviceError(
        'DEMO_UNKNOWN_TENANT',
        `the server at ${o.server} does not serve tenant ${JSON.stringify(o.tenant)} (its tenants: ${tenants || 'none'}); pass --tenant with one of them`,
      );
    }
  };

  const startSync = async (): Promise<SyncClient> => {
    const c = createSyncClient({
      writer: syncWriter(proxy, () => writerDb),
      baseUrl: o.server,
      token,
      schema: o.tenant,
      tables: clientTables(defaultProfile),
      resolver: mergeResolver,
      retry: { initialBackoffMs: 20, maxBackoffMs: 200, maxAttempts: 3 },
      // Each push_conflict response names one row; allow enough rounds for a device's offline edits.
      maxConflictRetries: 50,
      backoffMinMs: 200,
      backoffMaxMs: 2000,
      uploadIntervalMs: Math.max(250, o.intervalMs),
      // In the background mode, downloads follow the server's bundle-change stream (SSE), polling as fallback.
      watch: { mode: o.mode === 'auto' ? 'auto' : 'off', fallbackIntervalMs: 5_000 },
      fetch: (url, init) => {
        if (existsSync(offlinePath)) return Promise.reject(new TypeError('fetch failed: device is offline'));
        return fetch(url, init);
      },
    });
    c.on('conflict', (e) => {
      conflicts++;
      out({ ev: 'conflict', table: e.context.table, key: e.context.key, resolution: e.resolution.kind });
    });
    // Background errors (upload and download loops): each distinct one is reported once, with its cause.
    c.on('error', (e) => reporter.report(e.loop, e.error));
    c.on('progress', (e) => {
      // A snapshot's progress (download and apply; in a stage-free hydrate the two alternate page
      // by page) feeds the device's hydrate bar: at most one report per HYDRATE_PROGRESS_MS, plus
      // the first and the last of each stage (a change of stage alone is no edge: it is every page).
      if ((e.phase === 'hydrate' || e.phase === 'recover') && e.stage !== undefined) {
        const now = Date.now();
        const edge = e.done === 0 || e.done >= e.total;
        if (edge || now - lastHydrate.at >= HYDRATE_PROGRESS_MS) {
          lastHydrate.at = now;
          out({ ev: 'hydrate-progress', phase: e.phase, stage: e.stage, done: e.done, total: e.total });
        }
      }
      if (e.phase === 'push' && e.done === e.total) {
        progress.pushed += e.total;
        reporter.recovered('upload');
      }
    });
    c.on('applied', (e) => {
      if (e.kind === 'pull' || e.kind === 'snapshot') progress.pulled += e.rows;
      reporter.recovered('download');
    });
    await c.open();
    // Background mode never gives up: capped exponential backoff with jitter until the server answers.
    const backoff = new Backoff(DEVICE_RETRY_MIN_MS, DEVICE_RETRY_MAX_MS);
    for (;;) {
      try {
        if (o.mode === 'auto') await checkServer(c.sourceId);
        const r = await c.attach(o.user);
        if (r.status === 'connected') {
          reporter.recovered('attach');
          out({ ev: 'sync-ready', outcome: r.outcome, restore: r.restore ?? null, sourceId: c.sourceId });
          break;
        }
        await new Promise((res) => setTimeout(res, Math.min(2000, (r.retryAfterSeconds ?? 1) * 1000)));
      } catch (e) {
        if (o.mode !== 'auto' || e instanceof FatalDeviceError) throw e;
        const waitMs = backoff.next();
        reporter.report('attach', e, waitMs);
        await new Promise((res) => setTimeout(res, waitMs));
      }
    }
    client = c;
    if (o.mode === 'auto') c.start();
    return c;
  };
  const ensureClient = (): Promise<SyncClient> => {
    if (proxy.role !== 'primary') return Promise.reject(new Error(`not the primary (role ${proxy.role})`));
    clientReady ??= startSync().catch((e) => {
      clientReady = null;
      throw e;
    });
    return clientReady;
  };

  const startFailed = (err: unknown) => {
    if (err instanceof FatalDeviceError) {
      out({ ev: 'fatal', code: err.code, message: err.message });
      void shutdown(1);
      return;
    }
    out({ ev: 'error', where: 'sync-start', message: String(err) });
  };
  proxy.onRoleChange((e) => {
    out({ ev: 'role', role: e.role, previous: e.previous, epoch: e.epoch });
    if (e.role === 'primary') ensureClient().catch(startFailed);
  });
  await proxy.start();
  out({ ev: 'started', role: proxy.role, epoch: proxy.epoch, pid: process.pid, label: o.label });
  if (proxy.role === 'primary') ensureClient().catch(startFailed);

  let autoTimer: NodeJS.Timeout | null = null;
  let listId: string | null = null;
  if (o.mode === 'auto' && o.intervalMs > 0) {
    let n = 0;
    autoTimer = setInterval(() => {
      void (async () => {
        if (listId === null) {
          listId = randomUUID();
          await proxy.write('list.create', { id: listId, name: `${o.device} ${o.label}` });
        }
        const id = randomUUID();
        await proxy.write('item.put', {
          id,
          list_id: listId,
          title: `item ${++n} from ${o.label}`,
          updated_by: o.label,
        });
        client?.notifyLocalChange();
        out({ ev: 'wrote', id });
      })().catch((e) => out({ ev: 'error', where: 'auto-write', message: String(e) }));
    }, o.intervalMs);
  }

  // `demo status --dir` reads these: role, dbproxy metrics (the coordinator's on the primary), sync
  // status and progress. The primary also reports its progress (pushed, pulled, pending) when it changes.
  let lastProgress = '';
  let lastProgressAt = 0;
  // The device's row counts in the status file come from a live query over this process's proxy
  // (issue #20): reads on its own connection, re-run once per burst of commits from any process
  // (the app's writes, the primary's pulls). Started on the first status tick, and again after
  // a failure (e.g. a secondary that read before the primary had created the tables).
  let rowCounts: { lists: number; items: number } | null = null;
  let stopCounts: (() => void) | null = null;
  const watchCounts = () => {
    stopCounts ??= watchQuery<{ lists: number; items: number }>(
      proxy,
      'SELECT (SELECT count(*) FROM lists) AS lists, (SELECT count(*) FROM items) AS items',
      [],
      {
        throttleMs: 250,
        onResult: (rows: Array<{ lists: number; items: number }>) => {
          rowCounts = rows[0] ?? null;
        },
        onError: () => {
          stopCounts = null;
        },
      },
    );
  };
  const statusTimer =
    o.mode === 'auto'
      ? setInterval(() => {
          void (async () => {
            watchCounts();
            const sync = client === null ? null : await client.readStatus();
            const snapshot = {
              t: Date.now(),
              label: o.label,
              pid: process.pid,
              role: proxy.role,
              epoch: proxy.epoch,
              metrics: proxy.metrics(),
              sync,
              // the client's live status (connected, uploading, pending changes, last push/pull/error)
              live: client === null ? null : client.status,
              rows: rowCounts,
              progress: sync === null ? null : { ...progress, pending: sync.pending.total },
              lastError: reporter.last,
              conflicts,
            };
            writeFileSync(join(o.dir, `status-${o.label}.json`), JSON.stringify(snapshot, null, 2));
            if (sync !== null) {
              const p = { pushed: progress.pushed, pulled: progress.pulled, pending: sync.pending.total };
              const key = JSON.stringify(p);
              if (key !== lastProgress && Date.now() - lastProgressAt >= PROGRESS_EVERY_MS) {
                lastProgress = key;
                lastProgressAt = Date.now();
                out({ ev: 'progress', ...p, lastBundleSeqSeen: sync.lastBundleSeqSeen });
              }
              reporter.quietFor(DEVICE_RETRY_MAX_MS);
            }
          })().catch(() => {});
        }, 1000)
      : null;

  const handle = async (cmd: Record<string, unknown>): Promise<unknown> => {
    switch (cmd['cmd']) {
      case 'write': {
        const r = await proxy.write(String(cmd['method']), cmd['params'], {
          requestId: typeof cmd['requestId'] === 'string' ? cmd['requestId'] : randomUUID(),
        });
        return { seq: r.seq, value: r.value, replayed: r.replayed };
      }
      case 'burst': {
        // `count` item inserts into `list_id`, `concurrency` at a time; reports the acknowledged ids.
        const count = Number(cmd['count']);
        const concurrency = Math.max(1, Number(cmd['concurrency'] ?? 4));
        const listIdArg = String(cmd['list_id']);
        const by = String(cmd['by'] ?? o.label);
        const acked: string[] = [];
        const errors: string[] = [];
        let next = 0;
        const t0 = performance.now();
        const lane = async () => {
          while (next < count) {
            const i = next++;
            const id = randomUUID();
            try {
              await proxy.write(
                'item.put',
                { id, list_id: listIdArg, title: `${by} #${i}`, updated_by: by },
                { requestId: id, timeoutMs: 15_000 },
              );
              acked.push(id);
              if (acked.length % 25 === 0) out({ ev: 'burst-progress', acked: acked.length, count });
            } catch (e) {
              errors.push(String(e));
            }
          }
        };
        await Promise.all(Array.from({ length: concurrency }, lane));
        return { acked, errors, ms: performance.now() - t0 };
      }
      case 'sync': {
        const c = await ensureClient();
        const rounds = Math.max(1, Number(cmd['rounds'] ?? 1));
        const before = conflicts;
        let pushed = 0;
        let pulled = 0;
        let bundles = 0;
        let last: unknown = null;
        for (let i = 0; i < rounds; i++) {
          const r = await c.sync();
          if (r.push.outcome === 'committed') bundles++;
          pushed += r.push.rowCount ?? 0;
          pulled += r.pull.rowsApplied;
          bundles += r.pull.bundlesApplied;
          last = r.status;
          if (r.status.pending.total === 0 && r.push.outcome !== 'committed' && r.pull.bundlesApplied === 0)
            break;
        }
        return { pushed, pulled, bundles, conflicts: conflicts - before, status: last };
      }
      case 'dump':
        return proxy.read((db) => readAll(db), { minSeq: 0 });
      case 'status':
        return {
          role: proxy.role,
          epoch: proxy.epoch,
          metrics: proxy.metrics(),
          sync: client === null ? null : await client.readStatus(),
          live: client === null ? null : client.status,
          rows: rowCounts,
          conflicts,
          syncTransactions: proxy.metrics().methods[EXCLUSIVE_METRICS_KEY]?.ok ?? 0,
        };
      case 'offline':
        writeFileSync(offlinePath, `${Date.now()}\n`);
        return { offline: true };
      case 'online':
        rmSync(offlinePath, { force: true });
        return { offline: false };
      case 'exit':
        setImmediate(() => void shutdown(0));
        return { bye: true };
      default:
        throw new Error(`unknown command ${JSON.stringify(cmd['cmd'])}`);
    }
  };

  let shuttingDown = false;
  const shutdown = async (code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    if (autoTimer) clearInterval(autoTimer);
    if (statusTimer) clearInterval(statusTimer);
    stopCounts?.();
    try {
      await client?.close();
    } catch {}
    await proxy.close().catch(() => {});
    out({ ev: 'exit', code });
    process.exit(code);
  };
  process.once('SIGTERM', () => void shutdown(0));
  process.once('SIGINT', () => void shutdown(0));

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    let cmd: Record<string, unknown>;
    try {
      cmd = JSON.parse(line) as Record<string, unknown>;
    } catch {
      out({ ev: 'reply', id: null, ok: false, error: 'bad JSON' });
      return;
    }
    handle(cmd).then(
      (result) => out({ ev: 'reply', id: cmd['id'] ?? null, ok: true, result }),
      (e: unknown) =>
        out({
          ev: 'reply',
          id: cmd['id'] ?? null,
          ok: false,
          error: e instanceof Error ? e.message : String(e),
          code: (e as { code?: unknown })?.code ?? null,
        }),
    );
  });
  rl.on('close', () => {
    if (o.mode === 'tour') void shutdown(0);
  });
}
