// Issue #21 / #19 point 1: does the sync client keep its process responsive on big phases?
// For a hydrate (100k rows; 300k and 1M with X_BENCH_SCALE=1) and a push (50k; 200k at scale),
// each in a fresh child process (bench/client-load-child.ts): rows/s, client RSS growth, the
// longest event-loop block and the p99 delay (monitorEventLoopDelay at 10 ms resolution plus a
// 5 ms interval timer's worst gap). Baseline, same run: a plain better-sqlite3 bulk insert of the
// same number of rows (one transaction, no sync), measured the same way in its own child.
// The machine's load average is reported beside the figures (they are noisy on a shared box).
// Phases and sizes: X_BENCH_HYDRATE and X_BENCH_PUSH, comma-separated row counts ('' = none),
// override the defaults, e.g. X_BENCH_PUSH= X_BENCH_HYDRATE=1000000 runs only the 1M hydrate.
import { randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { spawnNode, tempDir } from '@x/testkit';
import { type BenchResult, reportBench } from '@x/testkit/bench';
import { openDevice } from '../test/client/helpers/device.js';
import { startTestServer } from '../test/client/helpers/server.js';
import { benchDatabase } from './setup.js';

const SCALE = process.env.X_BENCH_SCALE === '1';
const sizes = (v: string | undefined, def: number[]) =>
  v === undefined ? def : v.split(',').filter(Boolean).map(Number);
const HYDRATE = sizes(process.env.X_BENCH_HYDRATE, SCALE ? [100_000, 300_000, 1_000_000] : [100_000]);
const PUSH = sizes(process.env.X_BENCH_PUSH, SCALE ? [50_000, 200_000] : [50_000]);

const { pgCluster: cluster, url } = await benchDatabase('oversync_client_responsive');
const server = await startTestServer({
  database: { url },
  createSchema: true,
  retainedBundlesPerUser: 100_000,
  // X_BENCH_PIPELINE_MIN_ROWS=n: snapshot sessions of n rows or more are pipelined (default off)
  snapshotPipelineMinRows: Number(process.env.X_BENCH_PIPELINE_MIN_ROWS ?? 0),
});
const dir = await tempDir('oversync-client-responsive');
const child = join(import.meta.dirname, 'client-load-child.ts');

interface Figures {
  rows: number;
  ms: number;
  rssGrowthMb: number;
  maxBlockMs: number;
  maxBlockCpuMs: number;
  maxBlockMainCpuMs: number | null;
  p99BlockMs: number;
  gapMs: number;
  progressEvents: number;
  /** hydrate only: ms to the snapshot session, of download (fetch and stage), of the final apply */
  phases?: { createMs: number; downloadMs: number; applyMs: number };
}
async function run(args: string[]): Promise<Figures> {
  const load = loadavg()[0] ?? 0;
  const c = spawnNode(child, args);
  const line = await c.waitForLine(/^\{/, 900_000);
  await c.wait();
  const f = JSON.parse(line) as Figures;
  console.error(`${args[0]} ${args.slice(-1)[0]}: ${JSON.stringify(f)} load ${load.toFixed(1)}`);
  return f;
}
const label = (n: number) => (n >= 1_000_000 ? `${n / 1_000_000}m` : `${n / 1000}k`);
function figures(name: string, ours: Figures, base: Figures): BenchResult[] {
  const b = 'better-sqlite3-bulk-insert-same-rows';
  return [
    {
      name: `${name}-rows-per-s`,
      value: (ours.rows / ours.ms) * 1000,
      unit: 'rows/s',
      baseline: { name: b, value: (base.rows / base.ms) * 1000 },
    },
    {
      name: `${name}-rss-growth-mb`,
      value: ours.rssGrowthMb,
      unit: 'MB',
      lowerIsBetter: true,
      baseline: { name: b, value: base.rssGrowthMb },
    },
    {
      name: `${name}-max-event-loop-block-ms`,
      value: ours.maxBlockMs,
      unit: 'ms',
      lowerIsBetter: true,
      baseline: { name: b, value: base.maxBlockMs },
    },
    {
      // the CPU the process used during its longest-CPU gap between two 5 ms ticks: the block's
      // length without the time a loaded machine kept the process off the CPU
      name: `${name}-max-event-loop-block-cpu-ms`,
      value: ours.maxBlockCpuMs,
      unit: 'ms',
      lowerIsBetter: true,
      baseline: { name: b, value: base.maxBlockCpuMs },
    },
    ...(ours.maxBlockMainCpuMs === null || base.maxBlockMainCpuMs === null
      ? []
      : [
          {
            // the main thread's own CPU in its longest-CPU gap (Linux): the work that blocked the
            // loop, without other threads' CPU and without time off the CPU
            name: `${name}-max-event-loop-block-main-thread-cpu-ms`,
            value: ours.maxBlockMainCpuMs,
            unit: 'ms',
            lowerIsBetter: true,
            baseline: { name: b, value: base.maxBlockMainCpuMs },
          },
        ]),
    {
      name: `${name}-event-loop-delay-p99-ms`,
      value: ours.p99BlockMs,
      unit: 'ms',
      lowerIsBetter: true,
      baseline: { name: b, value: base.p99BlockMs },
    },
  ];
}

const results: BenchResult[] = [];
const loads: number[] = [];
const sample = () => loads.push(loadavg()[0] ?? 0);

// ---- push: a device pushes N fresh rows as one bundle (they seed the hydrate user if they fit) ----
const user = `bench-${randomUUID()}`;
let onServer = 0;
for (const n of PUSH) {
  sample();
  const base = await run(['bulk', join(dir.path, `bulk-push-${n}.db`), String(n)]);
  // the pushed rows seed the hydrate user only while they fit in its smallest hydrate
  const seeds = HYDRATE.length > 0 && onServer + n <= Math.min(...HYDRATE);
  const pushUser = seeds ? user : `${user}-push-${n}`;
  const ours = await run(['push', join(dir.path, `push-${n}.db`), server.baseUrl, pushUser, String(n)]);
  if (ours.rows !== n) throw new Error(`push ${n}: committed ${ours.rows} rows`);
  if (seeds) onServer += n;
  results.push(...figures(`push-${label(n)}`, ours, base));
}

// ---- hydrate: a fresh device attaches to a scope of N rows ----------------------------------
const seed = openDevice('seed', join(dir.path, 'seed.db'), server.baseUrl, user, {
  uploadLimit: 5000,
  downloadLimit: 5000,
});
await seed.client.open();
await seed.client.attach(user);
for (const n of HYDRATE) {
  while (onServer < n) {
    const k = Math.min(50_000, n - onServer);
    seed.db.transaction(() => {
      const ins = seed.db.prepare(`INSERT INTO users(id, name, email) VALUES (?, ?, ?)`);
      for (let i = 0; i < k; i++) ins.run(randomUUID(), `seed ${onServer + i}`, `seed${onServer + i}@x.org`);
    })();
    await seed.client.pushPending();
    onServer += k;
  }
  await server.query('ANALYZE');
  sample();
  const base = await run(['bulk', join(dir.path, `bulk-hydrate-${n}.db`), String(n)]);
  const ours = await run(['hydrate', join(dir.path, `hydrate-${n}.db`), server.baseUrl, user]);
  if (ours.rows !== n) throw new Error(`hydrate ${n}: restored ${ours.rows} rows`);
  results.push(...figures(`hydrate-${label(n)}`, ours, base));
  // where a hydrate's time goes (no baseline: parts of the figure above, not figures of their own)
  for (const [phase, ms] of Object.entries(ours.phases ?? {})) {
    results.push({
      name: `hydrate-${label(n)}-phase-${phase.replace(/Ms$/, '')}-ms`,
      value: ms,
      unit: 'ms',
      lowerIsBetter: true,
      baseline: null,
    });
  }
}
sample();
results.push({
  name: 'client-responsive-load-average',
  value: Math.max(...loads),
  unit: 'load',
  baseline: null,
});

await reportBench('oversync', results);
await seed.close();
await server.close();
await dir.cleanup();
await cluster.stop();
