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
const DURATION_MS = Number(process.env['DBPROXY_BENCH_MS'] ?? 3_000);
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
    return [
      {
        name: 'forwarded-write-p50-us',
        value: r['forwarded'].p50,
        unit: 'us',
        baseline: { name: 'zeromq-echo-p50-us', value: r['zmq'].p50 },
        lowerIsBetter: true,
      },
      {
        name: 'forwarded-write-p99-us',
        value: r['forwarded'].p99,
        unit: 'us',
        baseline: { name: 'zeromq-echo-p99-us', value: r['zmq'].p99 },
        lowerIsBetter: true,
      },
      {
        name: 'primary-local-write-p50-us',
        value: local['p50'],
        unit: 'us',
        baseline: { name: 'forwarded-write-p50-us', value: r['forwarded'].p50 },
        lowerIsBetter: true,
      },
      {
        name: 'primary-local-write-p99-us',
        value: local['p99'],
        unit: 'us',
        baseline: { name: 'forwarded-write-p99-us', value: r['forwarded'].p99 },
        lowerIsBetter: true,
      },
      {
        name: 'unix-socket-echo-p50-us',
        value: r['unix'].p50,
        unit: 'us',
        baseline: { name: 'zeromq-echo-p50-us', value: r['zmq'].p50 },
        lowerIsBetter: true,
      },
      {
        name: 'unix-socket-echo-p99-us',
        value: r['unix'].p99,
        unit: 'us',
        baseline: { name: 'zeromq-echo-p99-us', value: r['zmq'].p99 },
        lowerIsBetter: true,
      },
    ];
  });
}

async function runThroughput(children: ChildHandle[]): Promise<Json[]> {
  const msg = JSON.stringify({ cmd: 'throughput', durationMs: DURATION_MS, concurrency: CONCURRENCY });
  for (const c of children) c.send(msg);
  return Promise.all(children.map((c) => event(c, 'throughput', DURATION_MS + 60_000)));
}

async function throughput(durability: 'full' | 'normal'): Promise<BenchResult[]> {
  const baseline = await withDir(async (dir) => {
    const db = join(dir, 'direct.db');
    const kids = Array.from({ length: WRITERS }, () => spawnNode(CHILD, ['direct', db, durability]));
    await Promise.all(kids.map((k) => event(k, 'ready')));
    const rs = await runThroughput(kids);
    await stop(kids);
    const ops = rs.reduce((s, r) => s + r['ops'], 0);
    const busy = rs.reduce((s, r) => s + r['busy'], 0);
    const secs = Math.max(...rs.map((r) => r['elapsedMs'])) / 1000;
    return { perSecond: ops / secs, busy };
  });
  const forwarded = await withDir(async (dir) => {
    const db = join(dir, 'fwd.db');
    const rt = join(dir, 'run');
    const primary = spawnNode(CHILD, ['primary', db, rt, durability]);
    await event(primary, 'ready');
    const kids = Array.from({ length: WRITERS }, () => spawnNode(CHILD, ['secondary', db, rt, durability]));
    await Promise.all(kids.map((k) => event(k, 'ready')));
    const rs = await runThroughput(kids);
    await stop([...kids, primary]);
    const ops = rs.reduce((s, r) => s + r['ops'], 0);
    const errors = rs.reduce((s, r) => s + r['errors'], 0);
    const secs = Math.max(...rs.map((r) => r['elapsedMs'])) / 1000;
    return { perSecond: ops / secs, errors };
  });
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
}

const results = [...(await latency()), ...(await throughput('full')), ...(await throughput('normal'))];
await reportBench('dbproxy', results);
process.exit(0);
