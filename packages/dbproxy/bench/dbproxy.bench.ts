/**
 * dbproxy benchmarks (real processes, real sockets, a real SQLite file):
 *  - forwarded-write-p50-us / -p99-us: a 1-row INSERT from a secondary through the primary and back,
 *    one at a time; baseline: a bare ZeroMQ echo between the same two processes (a bare Unix-socket
 *    echo is reported too).
 *  - throughput-vs-multiwriter-{full,normal}: forwarded writes/s from 4 secondary processes; baseline:
 *    the same 4 processes writing the file themselves (WAL, busy timeout, BEGIN IMMEDIATE).
 * Run: `node --import tsx packages/dbproxy/bench/dbproxy.bench.ts` (or `pnpm bench dbproxy`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ChildHandle, spawnNode } from '@x/testkit';
import { type BenchResult, reportBench } from '@x/testkit/bench';

const CHILD = fileURLToPath(new URL('./bench-child.ts', import.meta.url));
const DURATION_MS = Number(process.env['DBPROXY_BENCH_MS'] ?? 2_000);
/** Alternating runs per setup; the median is reported. */
const TRIALS = Number(process.env['DBPROXY_BENCH_TRIALS'] ?? 3);
const WARMUP_MS = 500;
const WRITERS = 4;
/** Writes each secondary keeps in flight (the baseline processes write one at a time: they block). */
const CONCURRENCY = Number(process.env['DBPROXY_BENCH_CONCURRENCY'] ?? 128);

// biome-ignore lint/suspicious/noExplicitAny: JSON lines from the workers
type Json = Record<string, any>;

async function event(c: ChildHandle, name: string, timeoutMs = 60_000): Promise<Json> {
  const line = await c.waitForLine(
    (l) => l.includes(`"event":"${name}"`) || l.includes('"event":"error"'),
    timeoutMs,
  );
  const e = JSON.parse(line) as Json;
  if (e['event'] === 'error') throw new Error(`child failed: ${e['message']}\n${c.stderr}`);
  return e;
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'dbproxy-bench-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function stop(children: ChildHandle[]): Promise<void> {
  for (const c of children) c.send(JSON.stringify({ cmd: 'exit' }));
  await Promise.race([Promise.all(children.map((c) => c.wait())), new Promise((r) => setTimeout(r, 5_000))]);
  for (const c of children) c.kill();
}

async function latency(): Promise<BenchResult[]> {
  return withDir(async (dir) => {
    const db = join(dir, 'lat.db');
    const rt = join(dir, 'run');
    const primary = spawnNode(CHILD, ['primary', db, rt, 'normal']);
    await event(primary, 'ready');
    const secondary = spawnNode(CHILD, ['secondary', db, rt, 'normal']);
    await event(secondary, 'ready');
    secondary.send(JSON.stringify({ cmd: 'latency', n: 3000 }));
    const r = await event(secondary, 'latency', 120_000);
    primary.send(JSON.stringify({ cmd: 'local-latency', n: 3000 }));
    const local = await event(primary, 'local-latency', 120_000);
    await stop([secondary, primary]);
    console.log(
      `primary's own write (no IPC) p50 ${local['p50'].toFixed(1)} us, p99 ${local['p99'].toFixed(1)} us: ` +
        'the part of the forwarded figures that is the coordinator and SQLite, not the transport',
    );
    console.log(`unix-socket echo p50 ${r['unix'].p50.toFixed(1)} us, p99 ${r['unix'].p99.toFixed(1)} us`);
    const figures: Record<string, { p50: number; p99: number }> = {
      'forwarded-write': r['forwarded'],
      'zeromq-echo': r['zmq'],
      'unix-socket-echo': r['unix'],
      'primary-local-write': { p50: local['p50'], p99: local['p99'] },
    };
    // [result, its baseline]: forwarded and Unix echo against the ZeroMQ echo; the primary's own
    // write against the forwarded one (what the transport adds)
    const pairs: Array<[string, string]> = [
      ['forwarded-write', 'zeromq-echo'],
      ['primary-local-write', 'forwarded-write'],
      ['unix-socket-echo', 'zeromq-echo'],
    ];
    return pairs.flatMap(([name, base]) =>
      (['p50', 'p99'] as const).map((p) => ({
        name: `${name}-${p}-us`,
        value: figures[name]![p],
        unit: 'us',
        baseline: { name: `${base}-${p}-us`, value: figures[base]![p] },
        lowerIsBetter: true,
      })),
    );
  });
}

async function runThroughput(children: ChildHandle[], durationMs = DURATION_MS): Promise<Json[]> {
  const msg = JSON.stringify({ cmd: 'throughput', durationMs, concurrency: CONCURRENCY });
  for (const c of children) c.send(msg);
  return Promise.all(children.map((c) => event(c, 'throughput', durationMs + 60_000)));
}

interface Trial {
  perSecond: number;
  failures: number;
}

async function trial(children: ChildHandle[], failureField: 'busy' | 'errors'): Promise<Trial> {
  const rs = await runThroughput(children);
  const ops = rs.reduce((s, r) => s + r['ops'], 0);
  const failures = rs.reduce((s, r) => s + r[failureField], 0);
  const secs = Math.max(...rs.map((r) => r['elapsedMs'])) / 1000;
  return { perSecond: ops / secs, failures };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Both setups stay up side by side and take turns (baseline, forwarded, baseline, ...), so a burst of
 * load from elsewhere on the machine hits both; each figure is the median of TRIALS runs.
 */
async function throughput(durability: 'full' | 'normal'): Promise<BenchResult[]> {
  return withDir(async (dir) => {
    const directDb = join(dir, 'direct.db');
    const direct = Array.from({ length: WRITERS }, () => spawnNode(CHILD, ['direct', directDb, durability]));
    const db = join(dir, 'fwd.db');
    const rt = join(dir, 'run');
    const primary = spawnNode(CHILD, ['primary', db, rt, durability]);
    await event(primary, 'ready');
    const secondaries = Array.from({ length: WRITERS }, () =>
      spawnNode(CHILD, ['secondary', db, rt, durability]),
    );
    await Promise.all([...direct, ...secondaries].map((k) => event(k, 'ready')));
    const baselineTrials: Trial[] = [];
    const forwardedTrials: Trial[] = [];
    // one short untimed round each first: JIT, page cache and statement caches warm for both
    await runThroughput(direct, WARMUP_MS);
    await runThroughput(secondaries, WARMUP_MS);
    for (let i = 0; i < TRIALS; i++) {
      baselineTrials.push(await trial(direct, 'busy'));
      forwardedTrials.push(await trial(secondaries, 'errors'));
    }
    await stop([...direct, ...secondaries, primary]);
    const baseline = {
      perSecond: median(baselineTrials.map((t) => t.perSecond)),
      busy: baselineTrials.reduce((s, t) => s + t.failures, 0),
    };
    const forwarded = {
      perSecond: median(forwardedTrials.map((t) => t.perSecond)),
      errors: forwardedTrials.reduce((s, t) => s + t.failures, 0),
    };
    console.log(
      `${durability} trials: baseline ${baselineTrials.map((t) => t.perSecond.toFixed(0)).join(', ')}; ` +
        `forwarded ${forwardedTrials.map((t) => t.perSecond.toFixed(0)).join(', ')}`,
    );
    console.log(
      `${durability}: forwarded ${forwarded.perSecond.toFixed(0)}/s (${forwarded.errors} errors reached callers); ` +
        `multi-writer baseline ${baseline.perSecond.toFixed(0)}/s (${baseline.busy} SQLITE_BUSY reached callers)`,
    );
    return [
      {
        name: `throughput-vs-multiwriter-${durability}`,
        value: forwarded.perSecond,
        unit: 'writes/s',
        baseline: { name: `multiwriter-${durability}-writes-per-s`, value: baseline.perSecond },
      },
      {
        name: `multiwriter-${durability}-sqlite-busy`,
        value: baseline.busy,
        unit: 'errors',
        baseline: null,
      },
      {
        name: `forwarded-${durability}-errors`,
        value: forwarded.errors,
        unit: 'errors',
        baseline: null,
      },
    ];
  });
}

const results = [...(await latency()), ...(await throughput('full')), ...(await throughput('normal'))];
await reportBench('dbproxy', results);
process.exit(0);
