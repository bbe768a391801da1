/**
 * The convergence harness (issue #14, point 6): N device processes over real SQLite files and a
 * sync server process over a real PostgreSQL database, under random edits, offline periods and
 * SIGKILLs of devices and of the server, then synced until quiet and checked row for row and edit
 * for edit. Used by convergence.test.ts (short) and soak.ts (long). The seed decides every random
 * choice of the parent and of each device incarnation; replay a run with OVERSYNC_SEED=<seed>
 * (timing still differs between runs, so a replay reproduces the workload, not the interleaving).
 * OVERSYNC_KEEP=1 keeps a failed run's SQLite files, edit logs and database for inspection;
 * OVERSYNC_HARNESS_DEBUG=1 logs every device process exit.
 *
 * Scale-out mode (`servers` > 1, issue #19 point 5): that many server processes on the one database
 * (each also given the database's streaming replica when the cluster has one), and every request of
 * every device goes to a random one of them (the device's `fetch` is the router, seeded per device
 * incarnation apart from its workload); server kills then hit a random process, which comes back
 * on its own port.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ChildHandle, createTestDatabase, spawnNode, type TestDatabase, tempDir } from '@x/testkit';
import Database from 'better-sqlite3';
import pg from 'pg';
import { type DeviceConflicts, parseEditLog, type UnaccountedEdit, unaccountedEdits } from './accounting.js';
import type { DeviceConfig, ResolverKind } from './device-child.js';
import { mulberry32, type Rng } from './prng.js';
import { COMPARED_COLUMNS, CONVERGENCE_TABLES, type ConvergenceTable, PG_CONVERGENCE_DDL } from './schema.js';

const DEVICE_CHILD = join(import.meta.dirname, 'device-child.ts');
const SERVER_CHILD = join(import.meta.dirname, 'server-child.ts');

export interface ConvergenceOptions {
  readonly seed: number;
  readonly devices: number;
  /** Local write transactions per second, summed over all devices. */
  readonly tps: number;
  /** How long the random phase (edits, offline periods, kills) lasts. */
  readonly durationMs: number;
  /** Device SIGKILLs per minute (each a random device, at a random moment or at a kill point). */
  readonly deviceKillsPerMinute: number;
  readonly serverKillsPerMinute: number;
  /** Small enough that devices offline for a while meet `history_pruned` and rebuild. */
  readonly retainedBundlesPerUser: number;
  /** Rounds of "every device syncs once" allowed at the end before a device counts as wedged. */
  readonly maxQuietRounds: number;
  /** Server processes on the one database; devices send each request to a random one. */
  readonly servers: number;
  readonly log?: (line: string) => void;
}

export const DEFAULT_CONVERGENCE_OPTIONS: Omit<ConvergenceOptions, 'seed'> = Object.freeze({
  devices: 5,
  tps: 25,
  durationMs: 12_000,
  deviceKillsPerMinute: 30,
  serverKillsPerMinute: 8,
  retainedBundlesPerUser: 40,
  maxQuietRounds: 12,
  servers: 1,
});

export interface ConvergenceSummary {
  seed: number;
  ok: boolean;
  devices: number;
  servers: number;
  users: Record<string, string[]>;
  resolvers: Record<string, ResolverKind>;
  tps: number;
  durationMs: number;
  elapsedMs: number;
  /** Acknowledged local write transactions (all devices, all incarnations). */
  transactions: number;
  refusedWrites: number;
  syncsOk: number;
  kills: {
    devicesExternal: number;
    devicesAtKillPoint: number;
    server: number;
    killPoints: Record<string, number>;
  };
  deviceCrashes: Array<{ device: string; code: number | null; stderr: string }>;
  serverHttp5xx: Record<string, number>;
  conflictLogAvailable: boolean;
  conflictsByReason: Record<string, number>;
  conflictEventsByKind: Record<string, number>;
  deviceErrors: Record<string, { count: number; sample: string }>;
  quietAfterRounds: number | null;
  divergentRows: number;
  divergenceSamples: Array<{
    device: string;
    table: string;
    key: string;
    server: unknown;
    device_row: unknown;
  }>;
  fkViolations: number;
  wedgedDevices: Array<{ device: string; pending: number; error: unknown }>;
  unaccountedEdits: number;
  unaccountedSamples: UnaccountedEdit[];
  serverRows: Record<string, number>;
}

type DeviceState = {
  readonly name: string;
  readonly index: number;
  readonly user: string;
  readonly resolver: ResolverKind;
  readonly dbPath: string;
  readonly editLog: string;
  incarnation: number;
  child: ChildHandle | undefined;
  exited: Promise<void> | undefined;
  killPoint: string | undefined;
  killedExternally: boolean;
};

const KILL_POINTS = (rng: Rng): string =>
  rng.pick([
    () => `apply:${rng.int(1, 30)}`,
    () => `fetch:commit:sent:${rng.int(1, 3)}`,
    () => `fetch:commit:answered:${rng.int(1, 3)}`,
    () => `fetch:committed:answered:${rng.int(1, 2)}`,
    () => `fetch:chunks:sent:${rng.int(1, 2)}`,
    () => `fetch:create:answered:${rng.int(1, 2)}`,
    () => `fetch:pull:answered:${rng.int(1, 4)}`,
    () => `fetch:snapshot:answered:${rng.int(1, 3)}`,
  ])();

const RESOLVER_CYCLE: readonly ResolverKind[] = ['server-wins', 'server-wins', 'merge', 'client-wins'];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs one seeded convergence scenario and returns its summary (it does not throw on divergence). */
export async function runConvergence(
  partial: Partial<ConvergenceOptions> & { seed: number },
): Promise<ConvergenceSummary> {
  const o: ConvergenceOptions = { ...DEFAULT_CONVERGENCE_OPTIONS, ...partial };
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const t0 = Date.now();
  const rng = mulberry32(o.seed);
  log(`[convergence] seed=${o.seed} (replay with OVERSYNC_SEED=${o.seed})`);

  const dir = await tempDir('oversync-convergence');
  const tdb: TestDatabase = await createTestDatabase({ prefix: 'oversync_convergence' });
  const admin = new pg.Client({ connectionString: tdb.url });
  await admin.connect();
  await admin.query(PG_CONVERGENCE_DDL);

  const summary: ConvergenceSummary = {
    seed: o.seed,
    ok: false,
    devices: o.devices,
    servers: o.servers,
    users: {},
    resolvers: {},
    tps: o.tps,
    durationMs: o.durationMs,
    elapsedMs: 0,
    transactions: 0,
    refusedWrites: 0,
    syncsOk: 0,
    kills: { devicesExternal: 0, devicesAtKillPoint: 0, server: 0, killPoints: {} },
    deviceCrashes: [],
    serverHttp5xx: {},
    conflictLogAvailable: false,
    conflictsByReason: {},
    conflictEventsByKind: {},
    deviceErrors: {},
    quietAfterRounds: null,
    divergentRows: 0,
    divergenceSamples: [],
    fkViolations: 0,
    wedgedDevices: [],
    unaccountedEdits: 0,
    unaccountedSamples: [],
    serverRows: {},
  };
  const bump = (m: Record<string, number>, k: string, n = 1) => {
    m[k] = (m[k] ?? 0) + n;
  };

  // ---- the server processes --------------------------------------------------------------------
  type ServerSlot = {
    index: number;
    port: number;
    child: ChildHandle | undefined;
    exited: Promise<void> | undefined;
  };
  const slots: ServerSlot[] = Array.from({ length: Math.max(1, o.servers) }, (_, index) => ({
    index,
    port: 0,
    child: undefined,
    exited: undefined,
  }));
  const replicaArg = o.servers > 1 ? tdb.replicaUrls.join(',') : '';
  // Read through functions: the closures below change them between awaits.
  let phase: 'chaos' | 'final' | 'done' = 'chaos';
  const phaseNow = () => phase;
  const serverNow = (slot: ServerSlot) => slot.child;
  const startServer = async (slot: ServerSlot) => {
    const child = spawnNode(SERVER_CHILD, [
      tdb.url,
      String(slot.port),
      String(o.retainedBundlesPerUser),
      replicaArg,
    ]);
    slot.child = child;
    slot.exited = (async () => {
      for await (const line of child.lines) {
        if (line.startsWith('HTTP5XX '))
          bump(summary.serverHttp5xx, line.slice(8).replace(/[0-9a-f-]{36}/g, ':id'));
      }
      const exit = await child.wait();
      if (exit.signal === 'SIGKILL') summary.kills.server++;
      if (exit.signal !== 'SIGKILL' && phaseNow() !== 'done') {
        log(`[convergence] server ${slot.index} exited: ${JSON.stringify(exit)}\n${child.stderr}`);
      }
      // During the random phase a dead server comes back on the same port and database; the final
      // phase starts its own.
      if (slot.child === child && phaseNow() === 'chaos') {
        // A restart can fail on a loaded machine (PostgreSQL still holding the killed server's
        // connections, a slow start): try again rather than leave the chaos phase without a server.
        for (
          let attempt = 1;
          attempt <= 5 && phaseNow() === 'chaos' && serverNow(slot) === child;
          attempt++
        ) {
          await sleep(rng.int(100, 600) * attempt);
          if (phaseNow() !== 'chaos') break;
          await startServer(slot).catch((e) =>
            log(
              `[convergence] server ${slot.index} restart ${attempt}: ${e}\n${serverNow(slot)?.stderr.slice(-2000) ?? ''}`,
            ),
          );
        }
      }
    })();
    const line = await child.waitForLine(/^LISTENING \d+/, 60_000);
    slot.port = Number(line.split(' ')[1]);
  };
  await Promise.all(slots.map((slot) => startServer(slot)));
  const baseUrls = () => slots.map((slot) => `http://127.0.0.1:${slot.port}`);
  await installHistoryCapture(admin);

  // ---- device processes ------------------------------------------------------------------------
  const usersB = Math.max(1, Math.floor(o.devices / 5));
  const devices: DeviceState[] = Array.from({ length: o.devices }, (_, i) => {
    const user = i < o.devices - usersB ? `ua-${o.seed}` : `ub-${o.seed}`;
    const resolver = RESOLVER_CYCLE[i % RESOLVER_CYCLE.length] as ResolverKind;
    const name = `d${i}`;
    summary.users[user] = [...(summary.users[user] ?? []), name];
    summary.resolvers[name] = resolver;
    return {
      name,
      index: i,
      user,
      resolver,
      dbPath: join(dir.path, `${name}.db`),
      editLog: join(dir.path, `${name}.edits.jsonl`),
      incarnation: 0,
      child: undefined,
      exited: undefined,
      killPoint: undefined,
      killedExternally: false,
    };
  });
  const perDeviceTps = o.tps / o.devices;
  const startDevice = (d: DeviceState, killPoint: string | undefined): Promise<boolean> => {
    d.incarnation++;
    d.killPoint = killPoint;
    d.killedExternally = false;
    const cfg: DeviceConfig = {
      name: d.name,
      incarnation: d.incarnation,
      dbPath: d.dbPath,
      editLog: d.editLog,
      baseUrl: baseUrls()[0] as string,
      ...(slots.length > 1 ? { baseUrls: baseUrls() } : {}),
      user: d.user,
      seed: o.seed,
      resolver: d.resolver,
      tps: phase === 'chaos' ? perDeviceTps : 0.001,
      syncIntervalMs: [100, 1500],
      offlinePerSecond: phase === 'chaos' ? 0.05 : 0,
      offlineMs: [1000, 6000],
      ...(killPoint ? { killPoint } : {}),
      sessionPush: d.index % 2 === 1,
    };
    const child = spawnNode(DEVICE_CHILD, [JSON.stringify(cfg)]);
    d.child = child;
    let atKillPoint = false;
    d.exited = (async () => {
      for await (const line of child.lines) {
        if (line === 'KILLPOINT') atKillPoint = true;
        else if (line === 'SYNC_OK') summary.syncsOk++;
        else if (line.startsWith('CONFLICT ')) {
          const c = JSON.parse(line.slice(9)) as {
            table: string;
            localOp: string;
            reason: string;
            resolution: string;
          };
          bump(summary.conflictEventsByKind, `${c.reason}:${c.table}/${c.localOp}/${c.resolution}`);
        } else if (line.startsWith('ERR ')) {
          const e = JSON.parse(line.slice(4)) as { where: string; code?: string; message: string };
          const key = `${e.where}:${e.code ?? ''}:${normaliseMessage(e.message)}`;
          const entry = summary.deviceErrors[key] ?? { count: 0, sample: line.slice(4, 1500) };
          entry.count++;
          summary.deviceErrors[key] = entry;
        }
      }
      const exit = await child.wait();
      if (process.env.OVERSYNC_HARNESS_DEBUG) {
        log(
          `[convergence] ${d.name}#${cfg.incarnation} (${killPoint ?? 'no kill point'}) exit ${JSON.stringify(exit)} atKillPoint=${atKillPoint}`,
        );
      }
      if (atKillPoint) {
        summary.kills.devicesAtKillPoint++;
        bump(summary.kills.killPoints, (killPoint ?? '').replace(/:\d+$/, ''));
      } else if (exit.signal === 'SIGKILL' && d.killedExternally) summary.kills.devicesExternal++;
      else if (exit.code !== 0) {
        summary.deviceCrashes.push({ device: d.name, code: exit.code, stderr: child.stderr.slice(-3000) });
      }
      if (d.child === child && phase === 'chaos') {
        await sleep(rng.int(50, 800));
        if (phaseNow() === 'chaos') await startDevice(d, rng.chance(0.6) ? KILL_POINTS(rng) : undefined);
      }
    })();
    return child.waitForLine(/^READY$/, 60_000).then(
      () => true,
      () => false, // killed (kill point) before it was ready (the exit handler restarts it), or stuck
    );
  };
  await Promise.all(devices.map((d) => startDevice(d, undefined)));
  log(
    `[convergence] seed=${o.seed} server${slots.length > 1 ? 's' : ''} on ${slots.map((x) => x.port).join(', ')}, ${o.devices} devices ready`,
  );

  // ---- chaos -----------------------------------------------------------------------------------
  const tickMs = 250;
  const chaosEnd = Date.now() + o.durationMs;
  while (Date.now() < chaosEnd) {
    await sleep(tickMs);
    if (rng.chance((o.deviceKillsPerMinute * tickMs) / 60_000)) {
      const d = rng.pick(devices);
      if (d.child) {
        d.killedExternally = true;
        d.child.kill('SIGKILL');
      }
    }
    const victim = slots.length > 1 ? rng.pick(slots) : slots[0];
    if (rng.chance((o.serverKillsPerMinute * tickMs) / 60_000) && victim?.child) {
      const mode = rng.pick(['now', 'commit-start', 'commit-end'] as const);
      if (mode === 'now') victim.child.kill('SIGKILL');
      else victim.child.send(mode === 'commit-end' ? 'ARM commit-end' : `ARM commit-start ${rng.int(0, 20)}`);
    }
  }

  // ---- sync until quiet ------------------------------------------------------------------------
  phase = 'final';
  log(`[convergence] seed=${o.seed} chaos over after ${Date.now() - t0} ms; syncing until quiet`);
  // A clean server and clean device incarnations (armed kill points that never fired are disarmed
  // by a restart, which is one more crash to recover from).
  for (const slot of slots) {
    for (;;) {
      const s = serverNow(slot);
      const exited = slot.exited;
      s?.kill('SIGKILL');
      await exited;
      if (serverNow(slot) === s) break; // no restart was under way
    }
  }
  await Promise.all(slots.map((slot) => startServer(slot)));
  for (const d of devices) {
    const c = d.child;
    d.child = undefined;
    if (c) {
      d.killedExternally = true;
      c.kill('SIGKILL');
    }
  }
  await Promise.all(devices.map((d) => d.exited));
  const ready = await Promise.all(devices.map((d) => startDevice(d, undefined)));
  // A device that cannot attach, or whose process dies or stops answering, is wedged.
  const stuck = new Map<string, unknown>();
  devices.forEach((d, i) => {
    if (!ready[i]) stuck.set(d.name, { where: 'attach', stderr: d.child?.stderr.slice(-2000) });
  });
  const live = () => devices.filter((d) => !stuck.has(d.name));
  const command = async (d: DeviceState, cmd: string, reply: RegExp, timeoutMs = 120_000) => {
    const child = d.child as ChildHandle;
    try {
      child.send(cmd);
      return await child.waitForLine(reply, timeoutMs);
    } catch (e) {
      stuck.set(d.name, { where: cmd, error: String(e).slice(0, 2000) });
      return undefined;
    }
  };
  await Promise.all(live().map((d) => command(d, 'QUIESCE', /^QUIESCED$/)));

  const bundleTotal = async () =>
    (
      await admin.query<{ n: string }>(
        `SELECT coalesce(sum(next_bundle_seq), 0)::text AS n FROM sync.user_state`,
      )
    ).rows[0]?.n;
  let last = new Map<string, { error: unknown; pending: number }>();
  for (let round = 1; round <= o.maxQuietRounds; round++) {
    const before = await bundleTotal();
    last = new Map();
    for (const d of live()) {
      const line = await command(d, 'SYNC', /^SYNCED /);
      if (line) last.set(d.name, JSON.parse(line.slice(7)) as { error: unknown; pending: number });
    }
    const quiet =
      stuck.size === 0 &&
      [...last.values()].every((r) => !r.error && r.pending === 0) &&
      (await bundleTotal()) === before;
    if (quiet) {
      summary.quietAfterRounds = round;
      break;
    }
    if (live().length === 0) break;
  }
  for (const [device, error] of stuck) summary.wedgedDevices.push({ device, pending: -1, error });
  if (summary.quietAfterRounds === null) {
    for (const [device, r] of last) {
      if (r.error || r.pending !== 0) summary.wedgedDevices.push({ device, ...r });
    }
  }

  // ---- reports, shutdown -------------------------------------------------------------------------
  const reports = new Map<string, { conflicts: unknown; refusedWrites: number }>();
  for (const d of devices) {
    const path = join(dir.path, `${d.name}.report.json`);
    const c = d.child;
    if (!stuck.has(d.name) && (await command(d, `REPORT ${path}`, /^REPORTED$/, 30_000))) {
      reports.set(
        d.name,
        JSON.parse(readFileSync(path, 'utf8')) as { conflicts: unknown; refusedWrites: number },
      );
      c?.send('EXIT');
    } else {
      c?.kill('SIGKILL');
    }
    await c?.wait();
  }
  phase = 'done';
  for (const slot of slots) slot.child?.kill('SIGTERM');
  await Promise.all(slots.map((slot) => slot.exited));

  // ---- the checks ------------------------------------------------------------------------------
  const history = await readServerHistory(admin, Object.keys(summary.users));
  for (const [user, h] of history) {
    for (const t of CONVERGENCE_TABLES) summary.serverRows[`${user}.${t.table}`] = h.rows[t.table].size;
  }
  for (const d of devices) {
    const h = history.get(d.user);
    if (!h) throw new Error(`no server rows read for ${d.user}`);
    const local = new Database(d.dbPath, { readonly: true });
    try {
      summary.fkViolations += (local.pragma('foreign_key_check') as unknown[]).length;
      for (const t of CONVERGENCE_TABLES) {
        const mine = readDeviceRows(local, t.table);
        const theirs = h.rows[t.table];
        for (const key of new Set([...mine.keys(), ...theirs.keys()])) {
          const a = theirs.get(key);
          const b = mine.get(key);
          if (a === b) continue;
          summary.divergentRows++;
          if (summary.divergenceSamples.length < 10) {
            summary.divergenceSamples.push({
              device: d.name,
              table: t.table,
              key,
              server: a ? JSON.parse(a) : null,
              device_row: b ? JSON.parse(b) : null,
            });
          }
        }
      }
    } finally {
      local.close();
    }
    const report = reports.get(d.name);
    summary.refusedWrites += report?.refusedWrites ?? 0;
    const conflicts = conflictSets(report?.conflicts, summary);
    const edits = parseEditLog(readFileSync(d.editLog, 'utf8'));
    summary.transactions += edits.length;
    const lost = unaccountedEdits(d.name, edits, h, conflicts);
    summary.unaccountedEdits += lost.length;
    summary.unaccountedSamples.push(...lost.slice(0, Math.max(0, 10 - summary.unaccountedSamples.length)));
  }

  summary.elapsedMs = Date.now() - t0;
  summary.ok =
    summary.divergentRows === 0 &&
    summary.wedgedDevices.length === 0 &&
    summary.unaccountedEdits === 0 &&
    summary.fkViolations === 0 &&
    summary.deviceCrashes.length === 0;
  if (!summary.ok && process.env.OVERSYNC_KEEP === '1') {
    // The temp dir and the test database go away with this process: copy both out.
    const kept = join(tmpdir(), `oversync-convergence-${o.seed}-${Date.now()}`);
    cpSync(dir.path, kept, { recursive: true });
    const dump = async (sql: string) => (await admin.query(sql)).rows;
    const server = {
      lists: await dump(
        `SELECT _sync_scope_id, id::text, name, parent_list_id::text, rev FROM business.lists`,
      ),
      items: await dump(
        `SELECT _sync_scope_id, id::text, list_id::text, title, done, position, rev FROM business.items`,
      ),
      history: await dump(
        `SELECT u.user_id, h.bundle_seq, b.source_id, b.source_bundle_id, c.table_name, h.op_code, h.key_hex, h.rev
           FROM harness.row_history h JOIN sync.user_state u USING (user_pk) JOIN sync.table_catalog c USING (table_id)
           LEFT JOIN sync.bundle_log b ON b.user_pk = h.user_pk AND b.bundle_seq = h.bundle_seq
          ORDER BY u.user_id, h.bundle_seq`,
      ),
    };
    writeFileSync(join(kept, 'server.json'), JSON.stringify(server, null, 1));
    log(`[convergence] seed=${o.seed} kept for inspection in ${kept}`);
  }
  await admin.end();
  await tdb.drop();
  await dir.cleanup();
  log(`[convergence] seed=${o.seed} ${summary.ok ? 'OK' : 'FAILED'} in ${summary.elapsedMs} ms`);
  return summary;
}

function normaliseMessage(m: string): string {
  return m
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g, ':uuid')
    .replace(/\d+/g, 'N')
    .slice(0, 160);
}

/**
 * Every row of every committed bundle is copied, as it is inserted, into `harness.row_history`
 * (token and key only), so the accounting sees the whole history even after retention pruned
 * `sync.bundle_rows`. One statement-level trigger per bundle: the server's own tables and code are
 * untouched (bootstrap validates only `sync.meta` and the table catalog).
 */
async function installHistoryCapture(admin: pg.Client): Promise<void> {
  await admin.query(`
    CREATE SCHEMA harness;
    CREATE TABLE harness.row_history (
      user_pk bigint NOT NULL, bundle_seq bigint NOT NULL, table_id int NOT NULL, op_code smallint NOT NULL,
      key_hex text NOT NULL, rev text);
    CREATE FUNCTION harness.capture() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO harness.row_history
      SELECT user_pk, bundle_seq, table_id, op_code, encode(key_bytes, 'hex'), payload_wire->>'rev' FROM fresh;
      RETURN NULL;
    END $$;
    CREATE TRIGGER harness_capture AFTER INSERT ON sync.bundle_rows
      REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION harness.capture();`);
}

type ServerState = {
  revs: Set<string>;
  deleted: Set<string>;
  present: Set<string>;
  rows: Record<ConvergenceTable, Map<string, string>>;
};

async function readServerHistory(admin: pg.Client, users: string[]): Promise<Map<string, ServerState>> {
  const out = new Map<string, ServerState>();
  for (const user of users) {
    const s: ServerState = {
      revs: new Set(),
      deleted: new Set(),
      present: new Set(),
      rows: { lists: new Map(), items: new Map() },
    };
    const hist = await admin.query<{ table_name: string; op_code: number; key: string; rev: string | null }>(
      `SELECT c.table_name, h.op_code, h.key_hex AS key, h.rev
         FROM harness.row_history h JOIN sync.user_state u USING (user_pk) JOIN sync.table_catalog c USING (table_id)
        WHERE u.user_id = $1`,
      [user],
    );
    for (const r of hist.rows) {
      if (r.op_code === 3) s.deleted.add(`${r.table_name}:${dashed(r.key)}`);
      else if (r.rev) s.revs.add(r.rev);
    }
    const lists = await admin.query(
      `SELECT id::text, name, parent_list_id::text, rev FROM business.lists WHERE _sync_scope_id = $1`,
      [user],
    );
    const items = await admin.query(
      `SELECT id::text, list_id::text, title, (CASE WHEN done THEN 1 ELSE 0 END) AS done, position, rev
         FROM business.items WHERE _sync_scope_id = $1`,
      [user],
    );
    for (const [table, rows] of [
      ['lists', lists.rows],
      ['items', items.rows],
    ] as const) {
      for (const r of rows as Array<Record<string, unknown>>) {
        s.rows[table].set(String(r.id), normaliseRow(table, r));
        s.present.add(`${table}:${r.id}`);
        if (typeof r.rev === 'string') s.revs.add(r.rev);
      }
    }
    out.set(user, s);
  }
  return out;
}

function dashed(hex: string): string {
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function readDeviceRows(db: Database.Database, table: ConvergenceTable): Map<string, string> {
  const rows = db.prepare(`SELECT * FROM ${table}`).all() as Array<Record<string, unknown>>;
  return new Map(rows.map((r) => [String(r.id), normaliseRow(table, r)]));
}

/** One text form for a row from either side: the compared columns in order, numbers as numbers. */
function normaliseRow(table: ConvergenceTable, r: Record<string, unknown>): string {
  return JSON.stringify(
    COMPARED_COLUMNS[table].map((c) => {
      const v = r[c];
      if (v === undefined || v === null) return null;
      if (c === 'done' || c === 'position') return Number(v);
      return String(v);
    }),
  );
}

/** The accounting's view of a device's conflict log (`client.conflicts()` records), if it exists. */
function conflictSets(records: unknown, summary: ConvergenceSummary): DeviceConflicts {
  const revs = new Set<string>();
  const deletes = new Set<string>();
  if (Array.isArray(records)) {
    summary.conflictLogAvailable = true;
    for (const r of records as Array<Record<string, unknown>>) {
      summary.conflictsByReason[String(r.reason ?? 'unknown')] =
        (summary.conflictsByReason[String(r.reason ?? 'unknown')] ?? 0) + 1;
      // Only a recorded loss accounts for an edit: a conflict the local intent survived (keep-local,
      // merged) re-queues it, so it must then reach the server (rule 1 of accounting.ts).
      if (r.localLost === false) continue;
      const payload = r.localPayload as Record<string, unknown> | null | undefined;
      if (payload && typeof payload.rev === 'string') revs.add(payload.rev);
      const key = r.key as Record<string, unknown> | string | undefined;
      const id = typeof key === 'string' ? key : String(key?.id ?? '');
      if (r.localOp === 'DELETE') deletes.add(`${String(r.table)}:${id}`);
    }
  }
  return { revs, deletes };
}
