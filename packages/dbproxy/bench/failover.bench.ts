/**
 * dbproxy failover tail (issue 15, point 2). Five real processes share one SQLite file and write
 * continuously; the primary is SIGKILLed, again and again (a replacement process joins after each
 * kill). About every third round the successor is killed too, in the middle of its promotion (at
 * the lock, with the coordinator open, bound, or announced: `arm` in failover-child.mjs).
 * Per round, from the SIGKILL of the primary:
 *  - first ack: the first write acknowledged by the next primary (on any process);
 *  - all writing: the last surviving process to get a write acknowledged by the next primary;
 *  - lock acquired: the next primary's `lock-acquired` phase (the OS side of the failover).
 * Reported: p99 of first ack and all writing against their own p50 (this run), max beside, and the
 * p50 of first ack against SIGKILL-to-lock-acquired. Machine load is printed and recorded.
 * Knobs: DBPROXY_FAILOVER_KILLS (default 50), DBPROXY_FAILOVER_PROCESSES (5),
 * DBPROXY_FAILOVER_CONCURRENCY (writes in flight per process, 2).
 * Run: `node --import tsx packages/dbproxy/bench/failover.bench.ts` after `pnpm build` (the workers
 * run the built package), or `pnpm bench dbproxy`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BenchResult, percentile, reportBench } from '@x/testkit/bench';
import { type Json, now, StormWorker } from './storm-worker.js';

const KILLS = Number(process.env['DBPROXY_FAILOVER_KILLS'] ?? 50);
const PROCESSES = Number(process.env['DBPROXY_FAILOVER_PROCESSES'] ?? 5);
/** Promotion phases at which a successor is killed, in turn. */
const KILL_PHASES = ['lock-acquired', 'coordinator-open', 'bound', 'announced'] as const;
/** A round that has not recovered by then is counted as failed (and the bench fails). */
const ROUND_TIMEOUT_MS = 15_000;

const PHASES = ['lock-acquired', 'database-open', 'coordinator-open', 'bound', 'announced'] as const;

interface Round {
  /** ms from the kill to each promotion phase of the primary that took over, then to its first ack. */
  phases: number[];
  kills: number;
  midPromotionPhase: string | null;
  firstAckMs: number;
  allWritingMs: number;
  lockAcquiredMs: number;
}

async function run(dir: string): Promise<{ rounds: Round[]; writeErrors: number }> {
  const db = join(dir, 'failover.db');
  const rt = join(dir, 'run');
  let seq = 0;
  const spawn = (): StormWorker => new StormWorker(`w${seq++}`, db, rt);
  const first = spawn();
  await first.until((e) => e['event'] === 'ready', 30_000);
  const live: StormWorker[] = [first];
  for (let i = 1; i < PROCESSES; i++) live.push(spawn());
  await Promise.all(live.map((w) => w.until((e) => e['event'] === 'ready', 30_000)));
  const rounds: Round[] = [];
  let kills = 0;
  let epoch = first.primaryEpoch ?? 1;
  try {
    for (let r = 0; kills < KILLS; r++) {
      // steady state: every process has had a write acknowledged under the current primary
      await Promise.all(
        live.map((w) => w.until((e) => e['event'] === 'first-ack' && e['epoch'] >= epoch, ROUND_TIMEOUT_MS)),
      );
      const primary = live.find((w) => w.primaryEpoch === epoch);
      if (primary === undefined) throw new Error(`round ${r}: no process is primary at epoch ${epoch}`);
      const survivors = live.filter((w) => w !== primary);
      const midPhase = r % 3 === 2 ? KILL_PHASES[Math.floor(r / 3) % KILL_PHASES.length]! : null;
      if (midPhase !== null) {
        const tag = `r${r}`;
        for (const w of survivors)
          w.handle.send(JSON.stringify({ cmd: 'arm', epoch: epoch + 1, phase: midPhase, tag }));
        await Promise.all(
          survivors.map((w) => w.until((e) => e['event'] === 'armed' && e['tag'] === tag, 10_000)),
        );
      }
      const killedAt = now();
      primary.handle.kill('SIGKILL');
      kills++;
      // recovered: every process that is still alive writes under a newer primary
      const acks = await Promise.all(
        survivors.map((w) =>
          w.until((e) => e['event'] === 'first-ack' && e['epoch'] > epoch, ROUND_TIMEOUT_MS),
        ),
      );
      const selfKilled = survivors.filter((w) => w.find((e) => e['event'] === 'self-kill') !== undefined);
      kills += selfKilled.length;
      const ackTimes = acks.filter((a): a is Json => a !== undefined).map((a) => a['at'] as number);
      const newEpoch = Math.max(...acks.filter((a) => a !== undefined).map((a) => a!['epoch'] as number));
      const lock = survivors
        .flatMap((w) => w.events)
        .find((e) => e['event'] === 'phase' && e['phase'] === 'lock-acquired' && e['epoch'] === epoch + 1);
      const promoter = survivors.find((w) => w.primaryEpoch === newEpoch);
      const phaseAt = (ph: string): number =>
        (promoter?.find((e) => e['event'] === 'phase' && e['phase'] === ph && e['epoch'] === newEpoch)?.[
          'at'
        ] as number) ?? Number.NaN;
      rounds.push({
        phases: [...PHASES.map((ph) => phaseAt(ph) - killedAt), Math.min(...ackTimes) - killedAt],
        kills: 1 + selfKilled.length,
        midPromotionPhase: selfKilled.length > 0 ? midPhase : null,
        firstAckMs: Math.min(...ackTimes) - killedAt,
        allWritingMs: Math.max(...ackTimes) - killedAt,
        lockAcquiredMs: lock === undefined ? Number.NaN : (lock['at'] as number) - killedAt,
      });
      if (midPhase !== null) {
        for (const w of survivors) w.handle.send(JSON.stringify({ cmd: 'arm', epoch: 0 }));
      }
      epoch = newEpoch;
      // replacements join as secondaries before the next round
      const gone = new Set([primary, ...selfKilled]);
      for (let i = live.length - 1; i >= 0; i--) if (gone.has(live[i]!)) live.splice(i, 1);
      const fresh = Array.from({ length: gone.size }, spawn);
      live.push(...fresh);
      await Promise.all(fresh.map((w) => w.until((e) => e['event'] === 'ready', 30_000)));
    }
  } finally {
    for (const w of live) w.handle.send(JSON.stringify({ cmd: 'exit' }));
    await Promise.race([
      Promise.all(live.map((w) => w.handle.wait())),
      new Promise((r) => setTimeout(r, 5_000)),
    ]);
    for (const w of live) w.handle.kill('SIGKILL');
  }
  return { rounds, writeErrors: 0 };
}

const load = loadavg();
console.log(`load average before: ${load.map((l) => l.toFixed(2)).join(' ')}`);
const dir = await mkdtemp(join(tmpdir(), 'dbproxy-failover-'));
const started = Date.now();
let outcome: Awaited<ReturnType<typeof run>>;
try {
  outcome = await run(dir);
} finally {
  await rm(dir, { recursive: true, force: true });
}
const { rounds } = outcome;
const loadAfter = loadavg();
console.log(`load average after: ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`);
const kills = rounds.reduce((s, r) => s + r.kills, 0);
const mid = rounds.filter((r) => r.midPromotionPhase !== null);
const stat = (xs: number[]): string =>
  `p50 ${percentile(xs, 50).toFixed(0)}, p99 ${percentile(xs, 99).toFixed(0)}, max ${Math.max(...xs).toFixed(0)} ms`;
const firstAck = rounds.map((r) => r.firstAckMs);
const allWriting = rounds.map((r) => r.allWritingMs);
const lockAcquired = rounds.map((r) => r.lockAcquiredMs).filter(Number.isFinite);
console.log(
  `${rounds.length} rounds, ${kills} kills (${mid.length} successors killed mid-promotion: ` +
    `${mid.map((r) => r.midPromotionPhase).join(', ')}) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
);
console.log(`kill -> first acknowledged write: ${stat(firstAck)}`);
console.log(`kill -> every process writing:    ${stat(allWriting)}`);
console.log(`kill -> next lock acquired:        ${stat(lockAcquired)}`);
const medians = [...PHASES, 'first ack'].map(
  (ph, i) => `${ph} ${percentile(rounds.map((r) => r.phases[i]!).filter(Number.isFinite), 50).toFixed(0)}`,
);
console.log(`kill -> the new primary's phases (p50 ms): ${medians.join(', ')}`);
if (mid.length > 0) {
  console.log(`  mid-promotion rounds only: first ack ${stat(mid.map((r) => r.firstAckMs))}`);
  console.log(`  mid-promotion rounds only: all writing ${stat(mid.map((r) => r.allWritingMs))}`);
}
const results: BenchResult[] = [
  {
    name: 'failover-first-ack-p99-ms',
    value: percentile(firstAck, 99),
    unit: 'ms',
    baseline: { name: 'failover-first-ack-p50-ms', value: percentile(firstAck, 50) },
    lowerIsBetter: true,
  },
  {
    name: 'failover-all-writing-p99-ms',
    value: percentile(allWriting, 99),
    unit: 'ms',
    baseline: { name: 'failover-all-writing-p50-ms', value: percentile(allWriting, 50) },
    lowerIsBetter: true,
  },
  {
    name: 'failover-all-writing-max-ms',
    value: Math.max(...allWriting),
    unit: 'ms',
    baseline: { name: 'failover-first-ack-max-ms', value: Math.max(...firstAck) },
    lowerIsBetter: true,
  },
  {
    name: 'failover-first-ack-p50-ms',
    value: percentile(firstAck, 50),
    unit: 'ms',
    baseline: { name: 'sigkill-to-lock-acquired-p50-ms', value: percentile(lockAcquired, 50) },
    lowerIsBetter: true,
  },
  { name: 'failover-kills', value: kills, unit: 'kills', baseline: null },
  { name: 'failover-mid-promotion-kills', value: mid.length, unit: 'kills', baseline: null },
  { name: 'failover-load-average-1m', value: (load[0]! + loadAfter[0]!) / 2, unit: 'load', baseline: null },
];
await reportBench('dbproxy', results);
process.exit(0);
