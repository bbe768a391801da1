/**
 * SIGSTOP soak (issue 15): five real processes write continuously to one SQLite file; the primary
 * is SIGSTOPped for 10 s (DBPROXY_SOAK_STOP_MS), then SIGCONTed. Reports, and fails (exit 1) when a
 * requirement is missed:
 *  - SIGSTOP -> writes resuming (the first write acknowledged by a newer primary; and the last
 *    process to write again): must be <= heartbeat.stallTimeoutMs + 1 s;
 *  - rows committed by the stopped process after SIGCONT (each row records the pid that committed
 *    it): must be 0;
 *  - acknowledged writes missing from the file or in it twice: must be 0.
 * Not part of the test suite or of `pnpm bench` (it stops a process for 10 s by design).
 * Run after `pnpm build` (the workers run the built package):
 *   pnpm --filter @x/dbproxy soak
 *   (or node --import tsx packages/dbproxy/bench/sigstop.soak.ts)
 * Knobs: DBPROXY_STALL_MS (stallTimeoutMs, default the library's 5000), DBPROXY_SOAK_STOP_MS (10000),
 * DBPROXY_SOAK_ROUNDS (1). Results also go to bench-results/dbproxy-soak.json.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BenchResult, reportBench } from '@x/testkit/bench';
import Database from 'better-sqlite3';
import { DEFAULT_STALL_TIMEOUT_MS } from '../src/index.js';
import { type Json, now, StormWorker } from './storm-worker.js';

const STALL_MS = Number(process.env['DBPROXY_STALL_MS'] ?? DEFAULT_STALL_TIMEOUT_MS);
const STOP_MS = Number(process.env['DBPROXY_SOAK_STOP_MS'] ?? 10_000);
const ROUNDS = Number(process.env['DBPROXY_SOAK_ROUNDS'] ?? 1);
const PROCESSES = 5;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface RoundResult {
  resumeMs: number;
  allWritingMs: number;
  stoppedExit: string;
  commitsAfterCont: number;
  lost: number;
  duplicated: number;
  acked: number;
}

async function round(dir: string, r: number): Promise<RoundResult> {
  const db = join(dir, `soak-${r}.db`);
  const rt = join(dir, 'run');
  const env: Record<string, string> = { DBPROXY_REPORT_ACKS: '1', DBPROXY_STALL_MS: String(STALL_MS) };
  const t0 = now();
  const first = new StormWorker('w0', db, rt, env);
  await first.until((e) => e['event'] === 'ready', 30_000);
  const all = [
    first,
    ...Array.from({ length: PROCESSES - 1 }, (_, i) => new StormWorker(`w${i + 1}`, db, rt, env)),
  ];
  await Promise.all(all.map((w) => w.until((e) => e['event'] === 'ready', 30_000)));
  const epoch = first.primaryEpoch;
  if (epoch === null) throw new Error('the first process is not the primary');
  await Promise.all(
    all.map((w) => w.until((e) => e['event'] === 'first-ack' && e['epoch'] >= epoch, 30_000)),
  );
  console.log(`  ${PROCESSES} processes writing after ${((now() - t0) / 1000).toFixed(1)} s`);
  await sleep(1_000); // the storm in full swing

  const stoppedAt = now();
  first.handle.kill('SIGSTOP');
  const others = all.slice(1);
  const acks = await Promise.all(
    others.map((w) =>
      w.until((e) => e['event'] === 'first-ack' && e['epoch'] > epoch, STALL_MS + STOP_MS + 30_000),
    ),
  );
  const times = acks.map((a) => (a?.['at'] as number) ?? Number.NaN);
  const resumeMs = Math.min(...times) - stoppedAt;
  const allWritingMs = Math.max(...times) - stoppedAt;

  const contAt = stoppedAt + STOP_MS;
  await sleep(Math.max(0, contAt - now()));
  const byStopped = (): number => {
    const c = new Database(db, { readonly: true });
    try {
      return (
        c.prepare('SELECT count(*) AS n FROM bench WHERE pid = ?').get(first.handle.pid) as { n: number }
      ).n;
    } finally {
      c.close();
    }
  };
  const beforeCont = byStopped();
  console.log(`  SIGCONT at ${(now() - stoppedAt).toFixed(0)} ms`);
  first.handle.kill('SIGCONT');
  await sleep(2_000); // the storm goes on; a stopped primary that was not ended would commit now
  for (const w of all) w.handle.send(JSON.stringify({ cmd: 'exit' }));
  const exits = await Promise.all(all.map((w) => w.handle.wait()));
  console.log(`  every process exited at ${(now() - stoppedAt).toFixed(0)} ms`);
  const commitsAfterCont = byStopped() - beforeCont;

  const c = new Database(db, { readonly: true });
  let lost = 0;
  let duplicated = 0;
  let acked = 0;
  try {
    const rows = c.prepare('SELECT writer, n, count(*) AS k FROM bench GROUP BY writer, n').all() as Array<{
      writer: string;
      n: number;
      k: number;
    }>;
    const counts = new Map(rows.map((row) => [`${row.writer}/${row.n}`, row.k]));
    for (const w of all) {
      const ns = w.events
        .filter((e: Json) => e['event'] === 'acked')
        .flatMap((e: Json) => e['ns'] as number[]);
      acked += ns.length;
      for (const n of ns) {
        const k = counts.get(`${w.name}/${n}`) ?? 0;
        if (k === 0) lost++;
        else if (k > 1) duplicated++;
      }
    }
  } finally {
    c.close();
  }
  console.log(`  acknowledged writes checked after ${((now() - t0) / 1000).toFixed(1)} s`);
  const e0 = exits[0]!;
  return {
    resumeMs,
    allWritingMs,
    stoppedExit: e0.signal ?? `code ${e0.code}`,
    commitsAfterCont,
    lost,
    duplicated,
    acked,
  };
}

console.log(
  `load average before: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}; stallTimeoutMs ${STALL_MS}, stop ${STOP_MS} ms, ${PROCESSES} processes`,
);
const dir = await mkdtemp(join(tmpdir(), 'dbproxy-soak-'));
const results: RoundResult[] = [];
try {
  for (let r = 0; r < ROUNDS; r++) {
    const res = await round(dir, r);
    results.push(res);
    console.log(
      `round ${r}: SIGSTOP -> writes resume ${res.resumeMs.toFixed(0)} ms, every process writing ` +
        `${res.allWritingMs.toFixed(0)} ms; stopped process ended by ${res.stoppedExit}; commits by it ` +
        `after SIGCONT ${res.commitsAfterCont}; ${res.acked} acknowledged writes, lost ${res.lost}, ` +
        `duplicated ${res.duplicated}`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
const load = loadavg()[0]!;
console.log(`load average after: ${load.toFixed(2)}`);
const worst = (f: (r: RoundResult) => number): number => Math.max(...results.map(f));
const limit = STALL_MS + 1_000;
const report: BenchResult[] = [
  {
    name: 'sigstop-to-writes-resume-ms',
    value: worst((r) => r.resumeMs),
    unit: 'ms',
    baseline: { name: 'stall-timeout-plus-1s-ms', value: limit },
    lowerIsBetter: true,
  },
  {
    name: 'sigstop-to-all-writing-ms',
    value: worst((r) => r.allWritingMs),
    unit: 'ms',
    baseline: { name: 'stall-timeout-plus-1s-ms', value: limit },
    lowerIsBetter: true,
  },
  {
    name: 'sigstop-commits-after-sigcont',
    value: worst((r) => r.commitsAfterCont),
    unit: 'rows',
    baseline: null,
  },
  { name: 'sigstop-acked-lost', value: worst((r) => r.lost), unit: 'writes', baseline: null },
  { name: 'sigstop-acked-duplicated', value: worst((r) => r.duplicated), unit: 'writes', baseline: null },
  { name: 'sigstop-load-average-1m', value: load, unit: 'load', baseline: null },
];
await reportBench('dbproxy-soak', report);
const failed =
  worst((r) => r.allWritingMs) > limit ||
  worst((r) => r.commitsAfterCont) > 0 ||
  worst((r) => r.lost) > 0 ||
  worst((r) => r.duplicated) > 0;
if (failed) console.error('SOAK FAILED: a requirement was missed (see above)');
process.exit(failed ? 1 : 0);
