// One measured client phase in a fresh process, so its RSS and event loop are the client's own:
//   node --import tsx client-load-child.ts hydrate <dbPath> <baseUrl> <user>
//   node --import tsx client-load-child.ts push    <dbPath> <baseUrl> <user> <rows>
//   node --import tsx client-load-child.ts bulk    <dbPath> <rows>   (baseline: plain better-sqlite3)
// Prints one JSON line: { rows, ms, rssGrowthMb, maxBlockMs, maxBlockCpuMs, maxBlockMainCpuMs,
// p99BlockMs, gapMs, progressEvents }.
// The event loop is watched by perf_hooks.monitorEventLoopDelay (resolution 10 ms; max and p99 of
// the delay) and by a 5 ms interval timer (the worst gap between two ticks, minus the interval).
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { childClient } from '../test/client/helpers/child-client.js';
import { SQLITE_BUSINESS_DDL } from '../test/client/helpers/schema.js';

const [mode = '', dbPath = '', a = '', b = '', c = ''] = process.argv.slice(2);
const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.exec(SQLITE_BUSINESS_DDL);

/**
 * The main thread's on-CPU time so far, ms (Linux: /proc/thread-self/schedstat, ns), or undefined
 * where that file does not exist. Unlike process.cpuUsage() it leaves out the worker, GC helper
 * and thread-pool threads: the CPU of the block itself.
 */
function mainCpuMs(): number | undefined {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return undefined;
  }
}

function rowOf(i: number): [string, string, string] {
  return [randomUUID(), `user ${i}`, `user${i}@example.com`];
}

interface Watch {
  stop(): {
    rssGrowthMb: number;
    maxBlockMs: number;
    maxBlockCpuMs: number;
    maxBlockMainCpuMs: number | null;
    p99BlockMs: number;
    gapMs: number;
    ms: number;
  };
}
function watch(): Watch {
  const h = monitorEventLoopDelay({ resolution: 10 });
  const rss0 = process.memoryUsage.rss();
  let peak = rss0;
  let last = performance.now();
  let gap = 0;
  // CPU time the process used between two ticks: the on-CPU length of a block, without the time
  // the OS kept the process off the CPU (on a loaded machine that is most of a long gap)
  let cpuLast = process.cpuUsage();
  let cpuGap = 0;
  let mainLast = mainCpuMs();
  let mainGap = 0;
  const mainTick = () => {
    const m = mainCpuMs();
    if (m !== undefined && mainLast !== undefined) mainGap = Math.max(mainGap, m - mainLast);
    mainLast = m;
  };
  const timer = setInterval(() => {
    mainTick();
    const now = performance.now();
    gap = Math.max(gap, now - last - 5);
    last = now;
    const cpu = process.cpuUsage(cpuLast);
    cpuLast = process.cpuUsage();
    cpuGap = Math.max(cpuGap, (cpu.user + cpu.system) / 1000);
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 5);
  h.enable();
  const t0 = performance.now();
  return {
    stop() {
      const ms = performance.now() - t0;
      const now = performance.now();
      gap = Math.max(gap, now - last - 5);
      const cpu = process.cpuUsage(cpuLast);
      cpuGap = Math.max(cpuGap, (cpu.user + cpu.system) / 1000);
      mainTick();
      h.disable();
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage.rss());
      return {
        ms,
        rssGrowthMb: (peak - rss0) / 2 ** 20,
        // the histogram's delay is measured past the resolution: add it back for the block length
        maxBlockMs: Math.max(h.max / 1e6, gap),
        // all threads' CPU (the main thread's plus, rarely, a worker's): an upper bound
        maxBlockCpuMs: cpuGap,
        // the main thread's own CPU in its longest-CPU gap between two ticks (Linux only)
        maxBlockMainCpuMs: mainLast === undefined ? null : mainGap,
        p99BlockMs: h.percentile(99) / 1e6,
        gapMs: gap,
      };
    },
  };
}

// X_BENCH_CPU_PROF=<dir>: write a CPU profile of this phase there (to find the long blocks)
const profDir = process.env.X_BENCH_CPU_PROF;
const inspector = profDir ? new Session() : undefined;
if (inspector) {
  inspector.connect();
  await inspector.post('Profiler.enable');
  await inspector.post('Profiler.setSamplingInterval', { interval: 500 });
  await inspector.post('Profiler.start');
}
// the blocks (> 40 ms between two ticks of a 2 ms timer), in the profile's clock (µs, monotonic),
// each with the main thread's CPU in it (ms, Linux only)
const blocks: [number, number, number | null][] = [];
let lastTick = process.hrtime.bigint();
let lastMain = mainCpuMs();
const blockTimer = inspector
  ? setInterval(() => {
      const now = process.hrtime.bigint();
      const main = mainCpuMs();
      if (now - lastTick > 40_000_000n) {
        const cpu = main !== undefined && lastMain !== undefined ? main - lastMain : null;
        blocks.push([Number(lastTick / 1000n), Number(now / 1000n), cpu]);
      }
      lastTick = now;
      lastMain = main;
    }, 2)
  : undefined;

let rows = 0;
let progressEvents = 0;
let phases: { createMs: number; downloadMs: number; applyMs: number } | undefined;
let out: ReturnType<Watch['stop']>;
if (mode === 'bulk') {
  const n = Number(a);
  const ins = db.prepare(`INSERT INTO users(id, name, email) VALUES (?, ?, ?)`);
  const w = watch();
  // yield once so the watch's timer is armed, then one plain bulk transaction
  await new Promise((r) => setTimeout(r, 20));
  db.transaction(() => {
    for (let i = 0; i < n; i++) ins.run(...rowOf(i));
  })();
  await new Promise((r) => setTimeout(r, 20));
  out = w.stop();
  rows = n;
} else {
  const [baseUrl, user] = [a, b];
  const client = childClient(db, baseUrl, user, {
    // X_BENCH_CHUNK_ROWS: rows per snapshot page (default: the client's default)
    ...(process.env.X_BENCH_CHUNK_ROWS ? { snapshotChunkRows: Number(process.env.X_BENCH_CHUNK_ROWS) } : {}),
    uploadLimit: 5000,
    downloadLimit: 5000,
  });
  // phase boundaries of a hydrate (ms from the start): session created (first download event),
  // last page staged, apply started; reported as `phases` so a slow hydrate says where it is slow
  const marks: Record<string, number> = {};
  let t0 = 0;
  client.on('progress', (e) => {
    progressEvents++;
    const at = performance.now() - t0;
    if (e.stage === 'download') marks.created ??= at;
    if (e.stage === 'download') marks.downloaded = at;
    if (e.stage === 'apply') marks.applyStarted ??= at;
  });
  await client.open();
  if (mode === 'hydrate') {
    const w = watch();
    t0 = performance.now();
    const r = await client.attach(user);
    out = w.stop();
    rows = r.restore?.rowCount ?? 0;
    phases = {
      createMs: marks.created ?? 0,
      downloadMs: (marks.downloaded ?? 0) - (marks.created ?? 0),
      applyMs: out.ms - (marks.applyStarted ?? out.ms),
    };
  } else {
    const n = Number(c);
    await client.attach(user);
    const ins = db.prepare(`INSERT INTO users(id, name, email) VALUES (?, ?, ?)`);
    for (let done = 0; done < n; done += 10_000) {
      db.transaction(() => {
        for (let i = done; i < Math.min(n, done + 10_000); i++) ins.run(...rowOf(i));
      })();
    }
    progressEvents = 0;
    const w = watch();
    const r = await client.pushPending();
    out = w.stop();
    rows = r.outcome === 'committed' ? (r.rowCount ?? n) : 0;
  }
  await client.close();
}
db.close();
if (inspector && profDir) {
  clearInterval(blockTimer);
  const { profile } = await inspector.post('Profiler.stop');
  writeFileSync(`${profDir}/${mode}-${process.pid}.cpuprofile`, JSON.stringify({ ...profile, blocks }));
}
process.stdout.write(`${JSON.stringify({ rows, ...out, progressEvents, ...(phases ? { phases } : {}) })}\n`);
