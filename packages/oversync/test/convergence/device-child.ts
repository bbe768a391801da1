/**
 * One device of the convergence harness, as its own process over a real SQLite file:
 * `node --import tsx device-child.ts '<DeviceConfig JSON>'`.
 *
 * It attaches, then writes random transactions (inserts, updates, deletes, moves of items between
 * lists, moves of lists under lists without cycles) at `tps`, syncs at random intervals, and goes
 * offline for random periods, all drawn from its seeded PRNG. Every write it acknowledges (the
 * SQLite commit returned) is appended to `editLog` and fsync'd before the next one starts: a SIGKILL
 * between the commit and the log line only loses an edit that was never reported.
 *
 * `killPoint` (optional) makes the process SIGKILL itself at a precise moment:
 * - `apply:<n>`: inside the n-th row the client writes with apply_mode=1 (a pull, a push replay, a
 *   conflict plan or a snapshot apply: the transaction is open);
 * - `fetch:<route>:<when>:<n>`: on the n-th request to `<route>` (`create`, `chunks`, `commit`,
 *   `committed`, `pull`, `snapshot`), `sent` = once the request is on the wire (it may or may not
 *   be processed), `answered` = after the answer arrived, before the client saw it.
 *
 * Stdout lines (for the parent): `READY`, `SYNC_OK`, `ERR <json>`, `CONFLICT <json>`, `KILLPOINT`,
 * `QUIESCED`, `SYNCED <json>`, `REPORTED`. Stdin commands: `QUIESCE`, `SYNC`, `REPORT <path>`, `EXIT`.
 */
import { closeSync, fsyncSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type ConflictResolver, createSyncClient, isClientError, type SyncClient } from '@x/oversync/client';
import Database from 'better-sqlite3';
import { deriveSeed, mulberry32, uuidFrom } from './prng.js';
import { CONVERGENCE_SCHEMA, CONVERGENCE_TABLES, SQLITE_CONVERGENCE_DDL } from './schema.js';

export type ResolverKind = 'server-wins' | 'client-wins' | 'merge';

export interface DeviceConfig {
  readonly name: string;
  readonly incarnation: number;
  readonly dbPath: string;
  readonly editLog: string;
  readonly baseUrl: string;
  /** Scale-out mode: each request goes to a random one of these servers (`baseUrl` is the first). */
  readonly baseUrls?: readonly string[];
  readonly user: string;
  readonly seed: number;
  readonly resolver: ResolverKind;
  /** Local write transactions per second. */
  readonly tps: number;
  readonly syncIntervalMs: readonly [number, number];
  /** Chance per second of going offline, and how long an offline period lasts. */
  readonly offlinePerSecond: number;
  readonly offlineMs: readonly [number, number];
  readonly killPoint?: string;
  /**
   * Push through push sessions only (create, chunks, commit: what a go-oversync client sends), as
   * if the server did not advertise the one-request push: the harness gives every other device
   * this, so both push paths meet in every scenario.
   */
  readonly sessionPush?: boolean;
}

/** One acknowledged local write, as logged. */
export interface EditRecord {
  /** The edit's unique token: written into `rev` of the row an upsert wrote. */
  readonly t: string;
  readonly op: 'insert' | 'update' | 'delete';
  readonly table: 'lists' | 'items';
  readonly key: string;
  /** Deletes: every row the delete removed (the row and what its cascade took along). */
  readonly removed?: ReadonlyArray<{ readonly table: 'lists' | 'items'; readonly key: string }>;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as DeviceConfig;
const rng = mulberry32(deriveSeed(cfg.seed, `${cfg.name}#${cfg.incarnation}`));
const out = (line: string) => process.stdout.write(`${line}\n`);
const kill = () => {
  out('KILLPOINT');
  process.kill(process.pid, 'SIGKILL');
};

const db = new Database(cfg.dbPath);
db.exec(SQLITE_CONVERGENCE_DDL);

// ---- kill points ----------------------------------------------------------------------------
const [kpKind, kpA, kpB, kpC] = (cfg.killPoint ?? '').split(':');
if (kpKind === 'apply') {
  const at = Number(kpA);
  let n = 0;
  db.function('x_harness_kill', () => {
    if (++n === at) kill();
    return 0;
  });
  for (const table of ['lists', 'items']) {
    for (const ev of ['INSERT', 'UPDATE', 'DELETE']) {
      db.exec(`CREATE TEMP TRIGGER x_harness_kill_${table}_${ev.toLowerCase()} AFTER ${ev} ON main.${table}
        WHEN (SELECT apply_mode FROM _sync_apply_state) = 1 BEGIN SELECT x_harness_kill(); END`);
    }
  }
}
const routeOf = (url: URL, method: string): string => {
  const p = url.pathname;
  if (p === '/sync/push-sessions') return 'create';
  if (p.endsWith('/chunks')) return 'chunks';
  // the requests that commit: a push session's commit, and the one-request push
  if (p.endsWith('/commit') || p === '/sync/push') return 'commit';
  if (p.startsWith('/sync/committed-bundles/')) return 'committed';
  if (p === '/sync/pull') return 'pull';
  if (p.startsWith('/sync/snapshot-sessions') && method !== 'DELETE') return 'snapshot';
  return 'other';
};
let kpSeen = 0;

// ---- client ---------------------------------------------------------------------------------
let offline = false;
// The router of the scale-out mode: its own PRNG, so the workload draws the same numbers either way.
const routeRng = mulberry32(deriveSeed(cfg.seed, `${cfg.name}#${cfg.incarnation}:route`));
const route = (u: string): string => {
  const targets = cfg.baseUrls;
  if (!targets || targets.length < 2) return u;
  const url = new URL(u);
  url.host = new URL(routeRng.pick(targets)).host;
  return url.toString();
};
const conflictLog = openSync(`${cfg.dbPath}.conflict-events.jsonl`, 'a');
const mergeResolver: ConflictResolver = (ctx) => {
  // Local fields win, except that an item keeps the server's list (a move elsewhere wins over an
  // edit here) and a list the server's parent; against a deleted row the local row is re-created.
  if (!ctx.localPayload) return { kind: 'accept-server' };
  if (!ctx.serverRowLocal) return { kind: 'keep-local' };
  const merged: Record<string, unknown> = { ...ctx.localPayload };
  if (ctx.table === 'items') merged.list_id = ctx.serverRowLocal.list_id;
  if (ctx.table === 'lists') merged.parent_list_id = ctx.serverRowLocal.parent_list_id;
  return { kind: 'merged', payload: merged };
};
const client: SyncClient = createSyncClient({
  writer: db,
  baseUrl: cfg.baseUrl,
  token: cfg.user,
  schema: CONVERGENCE_SCHEMA,
  tables: CONVERGENCE_TABLES.map((t) => ({ table: t.table, syncKeyColumns: [...t.syncKeyColumns] })),
  resolver: cfg.resolver === 'merge' ? mergeResolver : cfg.resolver,
  retry: { initialBackoffMs: 5, maxBackoffMs: 50, maxAttempts: 2 },
  downloadLimit: 50,
  uploadLimit: 50,
  snapshotChunkRows: 50,
  fetch: async (original, init) => {
    if (offline) throw new TypeError('fetch failed: device offline');
    const u = route(original);
    const url = new URL(u);
    const hit = kpKind === 'fetch' && routeOf(url, init.method ?? 'GET') === kpA && ++kpSeen === Number(kpC);
    if (hit && kpB === 'sent') {
      const p = fetch(u, init);
      setTimeout(kill, 1 + Math.floor(rng.next() * 5));
      return p;
    }
    const res = await fetch(u, init);
    if (hit) kill();
    if (cfg.sessionPush && url.pathname === '/sync/capabilities' && res.ok) {
      const caps = (await res.json()) as { features: Record<string, boolean> };
      delete caps.features['single_request_push'];
      return Response.json(caps);
    }
    return res;
  },
});
client.on('conflict', (e) => {
  const line = JSON.stringify({ at: Date.now(), context: e.context, resolution: e.resolution });
  writeSync(conflictLog, `${line}\n`);
  fsyncSync(conflictLog);
  const reason = (e.context as { reason?: string }).reason ?? 'row_version';
  out(
    `CONFLICT ${JSON.stringify({ table: e.context.table, localOp: e.context.localOp, reason, resolution: e.resolution.kind })}`,
  );
});

/**
 * OVERSYNC_TRACE=1 (with OVERSYNC_KEEP=1, to inspect a failed run): every change to the client's
 * dirty rows, outbox, row state and stash, and to the business rows, is logged in `_trace` of the
 * device's database, with the apply flag and the incarnation, so a lost edit can be followed.
 */
function installTrace(): void {
  db.exec(`CREATE TABLE IF NOT EXISTS _trace(id INTEGER PRIMARY KEY, inc INT, at TEXT, tbl TEXT, ev TEXT,
    key_json TEXT, info TEXT, apply INT)`);
  const applyFlag = `(SELECT apply_mode FROM _sync_apply_state WHERE singleton_key = 1)`;
  const now = `strftime('%H:%M:%f','now')`;
  // [table, key of row R, info of row R] with R standing for NEW or OLD
  const watch: Array<[string, (r: string) => string, (r: string) => string]> = [
    [
      '_sync_dirty_rows',
      (r) => `${r}.key_json`,
      (r) =>
        `${r}.op || ' ' || coalesce(json_extract(${r}.payload, '$.rev'), '-') || ' b' || ${r}.base_row_version`,
    ],
    [
      '_sync_outbox_rows',
      (r) => `${r}.key_json`,
      (r) =>
        `${r}.op || ' ' || coalesce(json_extract(${r}.local_payload, '$.rev'), '-') || ' sbid' || ${r}.source_bundle_id`,
    ],
    ['_sync_row_state', (r) => `${r}.key_json`, (r) => `${r}.row_version || ' del' || ${r}.deleted`],
    [
      '_sync_orphan_rows',
      (r) => `${r}.key_json`,
      (r) => `coalesce(json_extract(${r}.payload, '$.rev'), '-')`,
    ],
    [
      'items',
      (r) => `json_object('id', ${r}.id)`,
      (r) => `coalesce(${r}.rev, '-') || ' list ' || ${r}.list_id`,
    ],
    [
      'lists',
      (r) => `json_object('id', ${r}.id)`,
      (r) => `coalesce(${r}.rev, '-') || ' parent ' || coalesce(${r}.parent_list_id, '-')`,
    ],
  ];
  for (const [t, key, info] of watch) {
    for (const [ev, r] of [
      ['INSERT', 'NEW'],
      ['UPDATE', 'NEW'],
      ['DELETE', 'OLD'],
    ] as const) {
      db.exec(`CREATE TRIGGER IF NOT EXISTS _trace_${t}_${ev} AFTER ${ev} ON ${t} BEGIN
        INSERT INTO _trace(inc, at, tbl, ev, key_json, info, apply)
        VALUES (${cfg.incarnation}, ${now}, '${t}', '${ev}', ${key(r)}, ${info(r)}, ${applyFlag});
      END`);
    }
  }
  const note = db.prepare(
    `INSERT INTO _trace(inc, at, tbl, ev, key_json, info, apply) VALUES (?, ${now}, 'client', ?, '', ?, NULL)`,
  );
  traceNote = (ev, info) => note.run(cfg.incarnation, ev, info);
  client.on('applied', (e) => traceNote?.('applied', JSON.stringify(e)));
  client.on('progress', (e) => traceNote?.('progress', JSON.stringify(e)));
}
let traceNote: ((ev: string, info: string) => void) | undefined;

// ---- the edit log ---------------------------------------------------------------------------
const editLog = openSync(cfg.editLog, 'a');
let counter = 0;
const token = () => `${cfg.name}.${cfg.incarnation}.${++counter}`;
function ack(rec: EditRecord): void {
  writeSync(editLog, `${JSON.stringify(rec)}\n`);
  fsyncSync(editLog);
}

// ---- random local transactions --------------------------------------------------------------
const listIds = () => db.prepare(`SELECT id FROM lists`).pluck().all() as string[];
const itemIds = () => db.prepare(`SELECT id FROM items`).pluck().all() as string[];
const subtree = db.prepare(
  `WITH RECURSIVE s(id) AS (SELECT ? UNION SELECT l.id FROM lists l JOIN s ON l.parent_list_id = s.id)
   SELECT id FROM s`,
);
const itemsIn = (lists: string[]) =>
  lists.flatMap((l) => db.prepare(`SELECT id FROM items WHERE list_id = ?`).pluck().all(l) as string[]);

function writeOne(): EditRecord | undefined {
  const lists = listIds();
  const items = itemIds();
  const t = token();
  const w = rng.next();
  if (lists.length === 0 || (w < 0.1 && lists.length < 40)) {
    const id = uuidFrom(rng);
    const parent = lists.length > 0 && rng.chance(0.4) ? rng.pick(lists) : null;
    db.prepare(`INSERT INTO lists(id, name, parent_list_id, rev) VALUES (?, ?, ?, ?)`).run(
      id,
      `list ${t}`,
      parent,
      t,
    );
    return { t, op: 'insert', table: 'lists', key: id };
  }
  if (items.length === 0 || (w < 0.4 && items.length < 300)) {
    const id = uuidFrom(rng);
    db.prepare(`INSERT INTO items(id, list_id, title, done, position, rev) VALUES (?, ?, ?, 0, ?, ?)`).run(
      id,
      rng.pick(lists),
      `item ${t}`,
      rng.int(0, 1000),
      t,
    );
    return { t, op: 'insert', table: 'items', key: id };
  }
  if (w < 0.62) {
    const id = rng.pick(items);
    const col = rng.pick(['title', 'done', 'position'] as const);
    const value = col === 'title' ? `title ${t}` : col === 'done' ? rng.int(0, 1) : rng.int(0, 1000);
    db.prepare(`UPDATE items SET ${col} = ?, rev = ? WHERE id = ?`).run(value, t, id);
    return { t, op: 'update', table: 'items', key: id };
  }
  if (w < 0.74) {
    const id = rng.pick(items);
    db.prepare(`UPDATE items SET list_id = ?, rev = ? WHERE id = ?`).run(rng.pick(lists), t, id);
    return { t, op: 'update', table: 'items', key: id };
  }
  if (w < 0.8) {
    const id = rng.pick(lists);
    db.prepare(`UPDATE lists SET name = ?, rev = ? WHERE id = ?`).run(`list ${t}`, t, id);
    return { t, op: 'update', table: 'lists', key: id };
  }
  if (w < 0.86) {
    // Re-parent a list, never under itself or one of its descendants (no cycle locally).
    const id = rng.pick(lists);
    const inside = new Set(subtree.pluck().all(id) as string[]);
    const candidates = lists.filter((l) => !inside.has(l));
    const parent = candidates.length > 0 && rng.chance(0.7) ? rng.pick(candidates) : null;
    db.prepare(`UPDATE lists SET parent_list_id = ?, rev = ? WHERE id = ?`).run(parent, t, id);
    return { t, op: 'update', table: 'lists', key: id };
  }
  if (w < 0.96 || lists.length < 3) {
    const id = rng.pick(items);
    db.prepare(`DELETE FROM items WHERE id = ?`).run(id);
    return { t, op: 'delete', table: 'items', key: id, removed: [{ table: 'items', key: id }] };
  }
  const id = rng.pick(lists);
  const gone = subtree.pluck().all(id) as string[];
  const removed = [
    ...gone.map((key) => ({ table: 'lists' as const, key })),
    ...itemsIn(gone).map((key) => ({ table: 'items' as const, key })),
  ];
  db.prepare(`DELETE FROM lists WHERE id = ?`).run(id);
  return { t, op: 'delete', table: 'lists', key: id, removed };
}

let writing = true;
let refused = 0;
function writeLoopTick(): void {
  if (!writing) return;
  try {
    const rec = db.transaction(writeOne)();
    if (rec) ack(rec);
  } catch (e) {
    // e.g. SYNC_TRANSITION_PENDING while a remote replace is pending: not acknowledged.
    refused++;
    if (refused <= 3) out(`ERR ${JSON.stringify({ where: 'write', message: String((e as Error).message) })}`);
  }
}

// ---- sync, offline periods --------------------------------------------------------------------
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const errorInfo = (e: unknown) => {
  const err = e as { code?: string; message?: string; details?: unknown; stack?: string; cause?: unknown };
  const causes: string[] = [];
  for (let c = err.cause as { message?: string; cause?: unknown } | undefined; c && causes.length < 4; ) {
    causes.push(String(c.message ?? c).slice(0, 300));
    c = c.cause as typeof c;
  }
  return {
    code: err.code ?? 'UNKNOWN',
    message: String(err.message ?? e).slice(0, 500),
    details: err.details,
    causes,
    stack: err.stack?.split('\n').slice(0, 6).join('\n'),
  };
};
let syncing = true;
let syncInFlight: Promise<unknown> = Promise.resolve();
async function syncOnce(): Promise<void> {
  const p = client.sync();
  syncInFlight = p.catch(() => undefined);
  await p;
}
async function syncLoop(): Promise<void> {
  while (syncing) {
    await sleep(rng.int(cfg.syncIntervalMs[0], cfg.syncIntervalMs[1]));
    if (!syncing) break;
    if (offline) continue;
    try {
      traceNote?.('sync', 'start');
      await syncOnce();
      traceNote?.('sync', 'ok');
      out('SYNC_OK');
    } catch (e) {
      traceNote?.('sync', `error ${String((e as Error).message)}`);
      if (offline) continue;
      out(`ERR ${JSON.stringify({ where: 'sync', ...errorInfo(e) })}`);
    }
  }
}

async function attachLoop(): Promise<void> {
  await client.open();
  for (let i = 0; ; i++) {
    try {
      const r = await client.attach(cfg.user);
      if (r.status === 'connected') return;
    } catch (e) {
      if (i < 3 || i % 20 === 0) out(`ERR ${JSON.stringify({ where: 'attach', ...errorInfo(e) })}`);
      if (isClientError(e, 'OVERSYNC_CLIENT_ATTACH_BINDING_CONFLICT')) throw e;
    }
    await sleep(100);
  }
}

await attachLoop();
if (process.env.OVERSYNC_TRACE === '1') installTrace();
out('READY');
const writeTimer = setInterval(writeLoopTick, Math.max(1, Math.round(1000 / cfg.tps)));
const offlineTimer = setInterval(() => {
  if (!writing || offline || !rng.chance(cfg.offlinePerSecond)) return;
  offline = true;
  setTimeout(
    () => {
      offline = false;
    },
    rng.int(cfg.offlineMs[0], cfg.offlineMs[1]),
  );
}, 1000);
const syncDone = syncLoop();

// ---- the parent's commands ------------------------------------------------------------------
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(' ');
  void (async () => {
    if (cmd === 'QUIESCE') {
      writing = false;
      syncing = false;
      offline = false;
      clearInterval(writeTimer);
      clearInterval(offlineTimer);
      await syncDone;
      await syncInFlight;
      out('QUIESCED');
    } else if (cmd === 'SYNC') {
      let error: unknown;
      try {
        await syncOnce();
      } catch (e) {
        error = errorInfo(e);
      }
      const pending = await client.pendingStatus().catch(() => undefined);
      out(`SYNCED ${JSON.stringify({ error, pending: pending?.total ?? -1 })}`);
    } else if (cmd === 'REPORT' && arg) {
      const api = client as unknown as { conflicts?: (opts?: unknown) => unknown };
      let conflicts: unknown = null;
      if (typeof api.conflicts === 'function') {
        try {
          conflicts = await api.conflicts();
        } catch (e) {
          conflicts = { error: errorInfo(e) };
        }
      }
      const status = await client.readStatus().catch((e) => ({ error: errorInfo(e) }));
      writeFileSync(arg, JSON.stringify({ conflicts, status, refusedWrites: refused }));
      out('REPORTED');
    } else if (cmd === 'EXIT') {
      await client.close();
      db.close();
      closeSync(editLog);
      closeSync(conflictLog);
      process.exit(0);
    }
  })();
});
