// Watch fan-out of one server process (issue #19, point 4): the real `oversync-server` command
// (dist/, a child process) holds N `GET /sync/watch` SSE streams over M users, opened by one or two
// watcher processes (fanout-watchers.ts, raw node:http sockets); this process is a second sync
// service on the same PostgreSQL that commits one-row server-side bundles (scope manager
// execWrite), each user FANOUT_COMMIT_HZ times a second, spread evenly over the second, for
// FANOUT_SECONDS. The event reaches the watchers through the server's LISTEN connection, as on a
// deployment where the device that commits talks to another instance than the watchers.
//
// Figures (merged into bench-results/oversync.json; names carry N and M), each against the same
// figure of a first phase in the same run with one watcher on one user (FANOUT_BASELINE_ROUNDS
// sequential commits), so the ratio is what N watchers cost:
// - fanout-<N>w-<M>u-commit-to-event-p50-ms / -p99-ms: from the writer's COMMIT returning to the
//   `event: bundle` frame read at the watcher, over every (event, watcher).
// - fanout-<N>w-<M>u-listen-to-event-p50-ms / -p99-ms: the server's hop alone: a plain PostgreSQL
//   `LISTEN` connection in each watcher process receives the same NOTIFYs; from its notification to
//   the SSE frame (same process, same clock, same load). The log line also gives commit → plain
//   LISTEN (PostgreSQL's own delivery; its p50 can be below 0: the NOTIFY arrives before the busy
//   writer sees its COMMIT return).
// - fanout-<N>w-<M>u-write-to-event-p99-ms: from the start of the write (the client's point of
//   view, writer queueing included).
// - fanout-<N>w-<M>u-server-event-loop-delay-p99-ms: the worst per-second p99 of the server's event
//   loop delay during the load (fanout-probe.ts, preloaded into the server; also its CPU share).
// - fanout-<N>w-<M>u-drops: events a stream never delivered (sequence gaps + streams behind at the
//   end + streams that ended); baseline none.
// - fanout-<N>w-<M>u-server-rss-mb: the server's peak RSS during the load; baseline = its RSS
//   before the watchers connected (after the one-watcher phase).
// - fanout-<N>w-<M>u-rss-per-watcher-kb: (RSS with every stream open − RSS before) / N.
// - fanout-<N>w-<M>u-commits-per-s: commits the writer achieved (no commit starts after
//   FANOUT_SECONDS); baseline = the target (M × hz). A loaded machine may not reach it.
//
// Default: 2,000 watchers over 200 users, 15 s. X_BENCH_SCALE=1: 10,000 over 1,000, 30 s.
// Env: FANOUT_WATCHERS, FANOUT_USERS, FANOUT_SECONDS, FANOUT_COMMIT_HZ, FANOUT_WATCHER_PROCS,
// FANOUT_WRITER_CONCURRENCY, DATABASE_URL (an external PostgreSQL).
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { createCluster } from '@x/dbx';
import { createSyncService } from '@x/oversync/server';
import { type ChildHandle, spawnNode, startPostgres, tempDir, waitFor } from '@x/testkit';
import { percentile, reportBench } from '@x/testkit/bench';
import pg from 'pg';
import type { WatcherConfig } from './fanout-watchers.js';

const num = (name: string, fallback: number) => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const SCALE = process.env.X_BENCH_SCALE === '1';
const WATCHERS = num('FANOUT_WATCHERS', SCALE ? 10_000 : 2_000);
const USERS = num('FANOUT_USERS', SCALE ? 1_000 : 200);
const SECONDS = num('FANOUT_SECONDS', SCALE ? 30 : 15);
const HZ = num('FANOUT_COMMIT_HZ', 1);
const PROCS = num('FANOUT_WATCHER_PROCS', WATCHERS > 4_000 ? 2 : 1);
const WRITER_CONCURRENCY = num('FANOUT_WRITER_CONCURRENCY', 16);
const BASELINE_ROUNDS = num('FANOUT_BASELINE_ROUNDS', 100);
const SECRET = 'fanout-bench-secret-at-least-32-characters';
const TAG = `fanout-${WATCHERS}w-${USERS}u`;
const PKG = join(import.meta.dirname, '..');
const SERVER_BIN = join(PKG, 'dist/server/cli/main.js');
const WATCHER_CHILD = join(import.meta.dirname, 'fanout-watchers.ts');
const PROBE = join(import.meta.dirname, 'fanout-probe.ts');

const load = () =>
  loadavg()
    .map((n) => n.toFixed(2))
    .join(' ');
const log = (msg: string) => process.stderr.write(`[fanout.bench] ${new Date().toISOString()} ${msg}\n`);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
log(`${WATCHERS} watchers over ${USERS} users, ${HZ} commit/user/s for ${SECONDS} s; load ${load()}`);

// ---- PostgreSQL, the server process, the writer ------------------------------------------------
const cluster = await startPostgres({ replicas: 0 });
const admin = new pg.Client({ connectionString: cluster.primary.url });
await admin.connect();
const dbName = `oversync_fanout_${randomUUID().slice(0, 8)}`;
await admin.query(`CREATE DATABASE ${dbName}`);
await admin.end();
const url = cluster.primary.urlFor(dbName);
const db = createCluster({ primary: { connectionString: url, options: '-c TimeZone=UTC' } });
await db.exec(`CREATE SCHEMA business;
  CREATE TABLE business.ticks (_sync_scope_id text NOT NULL, id uuid NOT NULL, n int NOT NULL,
    PRIMARY KEY (_sync_scope_id, id));`);

const server = spawnNode(
  SERVER_BIN,
  [
    `--database-url=${url}`,
    `--jwt-secret=${SECRET}`,
    '--table=business.ticks',
    '--port=0',
    '--log-level=warn',
    '--shutdown-timeout-ms=5000',
  ],
  // The probe reports the server's event-loop delay and CPU time each second (stderr).
  { env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import tsx --import ${PROBE}`.trim() } },
);
/** The probe lines of the server between two epoch times. */
function probe(from: number, to: number) {
  const lines = [
    ...server.stderr.matchAll(/\[probe\] (\d+) eld_p50=\S+ eld_p99=(\S+) eld_max=(\S+) cpu_ms=(\d+)/g),
  ]
    .map((m) => ({ t: Number(m[1]), p99: Number(m[2]), max: Number(m[3]), cpu: Number(m[4]) }))
    .filter((l) => l.t > from && l.t <= to + 1000);
  return {
    seconds: lines.length,
    eldP99Max: Math.max(0, ...lines.map((l) => l.p99)),
    eldMax: Math.max(0, ...lines.map((l) => l.max)),
    cpuPercent: lines.length ? lines.reduce((n, l) => n + l.cpu, 0) / lines.length / 10 : Number.NaN,
  };
}
let baseUrl = '';
await waitFor(
  () => {
    baseUrl = /listening on (http:\/\/[^\s,]+)/.exec(server.stderr)?.[1] ?? '';
    return baseUrl !== '';
  },
  { timeoutMs: 60_000, what: 'oversync-server to listen' },
);
await waitFor(async () => (await fetch(`${baseUrl}/readyz`).catch(() => null))?.status === 200, {
  timeoutMs: 60_000,
  what: 'oversync-server /readyz',
});
const rssMb = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
};
log(`server ${baseUrl} pid ${server.pid} rss ${rssMb().toFixed(1)} MB`);

const writer = createSyncService({
  db,
  registeredTables: [{ schema: 'business', table: 'ticks', syncKeyColumns: ['id'] }],
  // A service sends the bundle NOTIFY only with watch enabled (it LISTENs only once someone
  // watches through it): an instance with watch off leaves the other instances' watchers blind.
  bundleChangeWatch: { enabled: true },
});
await writer.bootstrap();
const scopes = writer.scopeManager();
const users = Array.from({ length: USERS }, (_, i) => `fan-${i}`);
/** Commit times: key user * 2^22 + seq → [write start, commit returned]. */
const commits = new Map<number, [number, number]>();
const lastSeq = new Array<number>(USERS).fill(0);
const commitKey = (user: number, seq: number) => user * 4_194_304 + seq;
let commitN = 0;
async function commit(user: number): Promise<void> {
  const n = ++commitN;
  const t0 = now();
  const r = await scopes.execWrite(users[user] as string, { writerId: 'fanout-writer' }, async (tx) => {
    await tx.query('INSERT INTO business.ticks (id, n) VALUES (gen_random_uuid(), $1)', [n]);
  });
  const t1 = now();
  commits.set(commitKey(user, r.bundle.bundle_seq), [t0, t1]);
  lastSeq[user] = Math.max(lastSeq[user] ?? 0, r.bundle.bundle_seq);
}
// Every user gets a scope (and a first bundle) before anyone watches.
{
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < USERS) await commit(next++);
    }),
  );
  commits.clear();
}
const userIndexByPk = new Map<number, number>(
  (
    await db.query<{ pk: string; user_id: string }>(
      'SELECT user_pk::text AS pk, user_id FROM sync.user_state',
    )
  ).rows.map((r) => [Number(r.pk), Number(r.user_id.slice(4))]),
);
log(`${USERS} scopes initialised; load ${load()}`);

const dir = await tempDir('oversync-fanout');
async function startWatchers(assign: number[]): Promise<ChildHandle> {
  const cfg: WatcherConfig = {
    baseUrl,
    secret: SECRET,
    users,
    assign,
    afterSeq: lastSeq,
    connectConcurrency: 64,
    settleMs: 10_000,
    listen: { url, channel: 'oversync_bundle_change_v1' },
  };
  const child = spawnNode(WATCHER_CHILD, [JSON.stringify(cfg)]);
  const line = await child.waitForLine(/^CONNECTED /, 300_000);
  const [, ok, failed] = line.split(' ');
  if (Number(failed) > 0) throw new Error(`${failed} watch streams failed to open (${ok} open)`);
  return child;
}
type WatchReport = {
  streams: number;
  failed: number;
  ended: number;
  gaps: number;
  tailMissing: number;
  events: number[];
  notified: number[];
  rssMb: number;
};
async function collect(children: ChildHandle[]): Promise<WatchReport[]> {
  const expected = join(dir.path, `expected-${Date.now()}.json`);
  writeFileSync(expected, JSON.stringify(Object.fromEntries(lastSeq.map((s, i) => [String(i), s]))));
  return Promise.all(
    children.map(async (c, i) => {
      const file = `${expected}.${i}`;
      writeFileSync(file, readFileSync(expected));
      c.send(`EXPECT ${file}`);
      await c.waitForLine(/^REPORTED$/, 60_000);
      c.send('EXIT');
      await c.wait();
      return JSON.parse(readFileSync(`${file}.report.json`, 'utf8')) as WatchReport;
    }),
  );
}
type Latencies = {
  commitToEvent: number[];
  writeToEvent: number[];
  notifyToEvent: number[];
  commitToNotify: number[];
};
function latencies(reports: WatchReport[]): Latencies {
  const out: Latencies = { commitToEvent: [], writeToEvent: [], notifyToEvent: [], commitToNotify: [] };
  for (const r of reports) {
    // The plain LISTEN of the same process: when each notification arrived there.
    const notifiedAt = new Map<number, number>();
    for (let i = 0; i < r.notified.length; i += 3) {
      const user = userIndexByPk.get(r.notified[i] as number);
      if (user === undefined) continue;
      const key = commitKey(user, r.notified[i + 1] as number);
      const c = commits.get(key);
      if (!c) continue;
      notifiedAt.set(key, r.notified[i + 2] as number);
      out.commitToNotify.push((r.notified[i + 2] as number) - c[1]);
    }
    for (let i = 0; i < r.events.length; i += 3) {
      const key = commitKey(r.events[i] as number, r.events[i + 1] as number);
      const c = commits.get(key);
      if (!c) continue; // the initial bundle of a scope
      const t = r.events[i + 2] as number;
      out.commitToEvent.push(t - c[1]);
      out.writeToEvent.push(t - c[0]);
      const n = notifiedAt.get(key);
      if (n !== undefined) out.notifyToEvent.push(t - n);
    }
  }
  return out;
}
const pcts = (xs: number[]) =>
  `p50 ${percentile(xs, 50).toFixed(1)} p99 ${percentile(xs, 99).toFixed(1)} max ${Math.max(...xs).toFixed(1)} ms (n=${xs.length})`;

// ---- baseline: the same commits with one watcher ----------------------------------------------
const single = await startWatchers([0]);
for (let i = 0; i < BASELINE_ROUNDS; i++) {
  await commit(0);
  await sleep(20); // a pace, not a wait for anything: one commit at a time, like the load's users
}
const base = latencies(await collect([single]));
commits.clear();
log(
  `1 watcher: commit→event ${pcts(base.commitToEvent)}; commit→plain LISTEN ${pcts(base.commitToNotify)}; load ${load()}`,
);

// ---- N watchers over M users -------------------------------------------------------------------
const rssBefore = rssMb();
const assignments: number[][] = Array.from({ length: PROCS }, () => []);
for (let w = 0; w < WATCHERS; w++) assignments[w % PROCS]?.push(w % USERS);
const tConnect = Date.now();
const children = await Promise.all(assignments.map((a) => startWatchers(a)));
const rssConnected = rssMb();
log(
  `${WATCHERS} streams open in ${Date.now() - tConnect} ms; server rss ${rssBefore.toFixed(1)} → ${rssConnected.toFixed(1)} MB; load ${load()}`,
);

let rssPeak = rssConnected;
const rssTimer = setInterval(() => {
  rssPeak = Math.max(rssPeak, rssMb());
}, 500);
// User u's k-th commit is due at start + (k + u / USERS) / HZ seconds; no commit starts after
// SECONDS (when the writer cannot keep up, fewer commits are made, and counted).
const start = performance.now() + 200;
const end = start + SECONDS * 1000;
const loadFrom = Date.now();
let nextSlot = 0;
let total = 0;
let late = 0;
const lateness: number[] = [];
await Promise.all(
  Array.from({ length: WRITER_CONCURRENCY }, async () => {
    while (performance.now() < end) {
      const slot = nextSlot++;
      const k = Math.floor(slot / USERS);
      const user = slot % USERS;
      const due = start + ((k + user / USERS) / HZ) * 1000;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      else {
        lateness.push(-wait);
        if (-wait > 100) late++;
      }
      if (performance.now() >= end) break;
      total++;
      await commit(user);
    }
  }),
);
const loadSeconds = (performance.now() - start) / 1000;
const serverProbe = probe(loadFrom, Date.now());
clearInterval(rssTimer);
rssPeak = Math.max(rssPeak, rssMb());
const commitsPerS = total / loadSeconds;
log(
  `${total} commits in ${loadSeconds.toFixed(1)} s (${commitsPerS.toFixed(0)}/s, target ${USERS * HZ}/s; ${late} started >100 ms late); load ${load()}`,
);
log(
  `server during the load: cpu ${serverProbe.cpuPercent.toFixed(0)}% of a core, event-loop delay p99 (worst second) ${serverProbe.eldP99Max.toFixed(1)} ms, max ${serverProbe.eldMax.toFixed(1)} ms`,
);
const reports = await collect(children);
const fan = latencies(reports);
const drops = reports.reduce((n, r) => n + r.gaps + r.tailMissing, 0);
const ended = reports.reduce((n, r) => n + r.ended, 0);
const expectedEvents = Math.round(total * (WATCHERS / USERS));
log(
  `fan-out: commit→event ${pcts(fan.commitToEvent)}; commit→plain LISTEN ${pcts(fan.commitToNotify)}; ` +
    `plain LISTEN→event ${pcts(fan.notifyToEvent)}; write→event ${pcts(fan.writeToEvent)}; ` +
    `events ${fan.commitToEvent.length}/${expectedEvents}, drops ${drops}, streams ended ${ended}; ` +
    `watcher rss ${reports.map((r) => r.rssMb.toFixed(0)).join('/')} MB; server peak rss ${rssPeak.toFixed(1)} MB; load ${load()}`,
);

await reportBench('oversync', [
  ...(['p50', 'p99'] as const).flatMap((p) => {
    const q = p === 'p50' ? 50 : 99;
    return [
      {
        name: `${TAG}-commit-to-event-${p}-ms`,
        value: percentile(fan.commitToEvent, q),
        unit: 'ms',
        baseline: { name: `1 watcher ${p}`, value: percentile(base.commitToEvent, q) },
        lowerIsBetter: true,
      },
      {
        name: `${TAG}-listen-to-event-${p}-ms`,
        value: percentile(fan.notifyToEvent, q),
        unit: 'ms',
        baseline: { name: `1 watcher ${p}`, value: percentile(base.notifyToEvent, q) },
        lowerIsBetter: true,
      },
    ];
  }),
  {
    name: `${TAG}-write-to-event-p99-ms`,
    value: percentile(fan.writeToEvent, 99),
    unit: 'ms',
    baseline: { name: '1 watcher p99', value: percentile(base.writeToEvent, 99) },
    lowerIsBetter: true,
  },
  {
    name: `${TAG}-server-event-loop-delay-p99-ms`,
    value: serverProbe.eldP99Max,
    unit: 'ms',
    baseline: null,
  },
  { name: `${TAG}-drops`, value: drops + ended, unit: 'events', baseline: null },
  {
    name: `${TAG}-server-rss-mb`,
    value: rssPeak,
    unit: 'MB',
    baseline: { name: 'rss before the watchers', value: rssBefore },
    lowerIsBetter: true,
  },
  {
    name: `${TAG}-rss-per-watcher-kb`,
    value: ((rssConnected - rssBefore) * 1024) / WATCHERS,
    unit: 'KB',
    baseline: null,
  },
  {
    name: `${TAG}-commits-per-s`,
    value: commitsPerS,
    unit: 'commits/s',
    baseline: { name: 'target (users × hz)', value: USERS * HZ },
  },
]);
if (lateness.length > 0) {
  log(
    `writer: ${lateness.length} commits started after their slot, lateness p50 ${percentile(lateness, 50).toFixed(1)} p99 ${percentile(lateness, 99).toFixed(1)} ms; load ${load()}`,
  );
}

await new Promise((r) => setTimeout(r, 0));
server.kill('SIGTERM');
await server.wait();
await writer.close();
await db.close();
await dir.cleanup();
await cluster.stop();
