/**
 * Probe (not part of `scripts/bench.mjs`; not reported): how far below the raw ceiling the commit
 * per batch alone puts any group-commit writer fed by 64 closed-loop submitters, to read next to
 * `throughput-vs-raw-batch`. Each round prints, against the raw ceiling of the same round:
 *   - bare64: a synchronous loop of BEGIN IMMEDIATE + sequence UPDATE + 64 prepared inserts + COMMIT
 *     (no promises: the best a 64-job batch can do);
 *   - floor: the same batches fed by 64 async submitters through a minimal promise-per-job queue
 *     (no checks, no metrics, no deadlines: the cost of the promise round trip alone);
 * and the CPU-time rate of each (writes per CPU second of the process), which the load of a shared
 * machine disturbs less than wall time.
 *
 *   node --import tsx packages/writecoordinator/bench/probe-floor.ts
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';

const DURATION_MS = Number(process.env.WC_BENCH_DURATION_MS ?? 2_000);
const ROUNDS = Number(process.env.WC_BENCH_ROUNDS ?? 3);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wc-probe-'));
let fileNo = 0;

function openDb(): Database.Database {
  const db = new Database(path.join(dir, `f${fileNo++}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)');
  db.exec(
    "CREATE TABLE m (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID; INSERT INTO m VALUES ('seq', 0)",
  );
  return db;
}

/** A fresh file and the statements of one group-commit batch: BEGIN IMMEDIATE, sequence, inserts, COMMIT. */
function openBatchDb() {
  const db = openDb();
  return {
    db,
    ins: db.prepare('INSERT INTO t (v) VALUES (?)'),
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    writeSeq: db.prepare("UPDATE m SET value = ? WHERE key = 'seq'"),
  };
}

interface Rate {
  wall: number;
  cpu: number;
}

function rates(ops: number, t0: number, c0: NodeJS.CpuUsage): Rate {
  const cu = process.cpuUsage(c0);
  return { wall: (ops * 1000) / (performance.now() - t0), cpu: (ops * 1e6) / (cu.user + cu.system) };
}

function raw(): Rate {
  const db = openDb();
  const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  db.exec('BEGIN');
  for (let i = 0; i < 300_000; i++) ins.run(i);
  db.exec('COMMIT');
  const r = rates(300_000, t0, c0);
  db.close();
  return r;
}

function bare64(): Rate {
  const { db, ins, begin, commit, writeSeq } = openBatchDb();
  let i = 0;
  let seq = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < DURATION_MS) {
    begin.run();
    writeSeq.run(++seq);
    for (let k = 0; k < 64; k++) ins.run(i++);
    commit.run();
  }
  const r = rates(i, t0, c0);
  db.close();
  return r;
}

async function floor(): Promise<Rate> {
  const { db, ins, begin, commit, writeSeq } = openBatchDb();
  let i = 0;
  const job = () => ins.run(i++);
  type Job = { fn: () => unknown; resolve: (v: unknown) => void };
  let queue: Job[] = [];
  let scheduled = false;
  let seq = 0;
  let turnEnd = 0;
  const run = (): void => {
    scheduled = false;
    const batch = queue;
    queue = [];
    begin.run();
    writeSeq.run(++seq);
    const values: unknown[] = [];
    for (const j of batch) values.push(j.fn());
    commit.run();
    for (let k = 0; k < batch.length; k++) batch[k]!.resolve({ value: values[k], seq, replayed: false });
  };
  const submit = (fn: () => unknown): Promise<unknown> =>
    new Promise((resolve) => {
      queue.push({ fn, resolve });
      if (scheduled) return;
      scheduled = true;
      if (performance.now() < turnEnd) queueMicrotask(run);
      else
        setImmediate(() => {
          turnEnd = performance.now() + 2;
          run();
        });
    });
  let ops = 0;
  let stop = false;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const timer = setTimeout(() => {
    stop = true;
  }, DURATION_MS);
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (!stop) {
        await submit(job);
        ops++;
      }
    }),
  );
  clearTimeout(timer);
  const r = rates(ops, t0, c0);
  db.close();
  return r;
}

const fmt = (r: Rate, base: Rate): string =>
  `${Math.round(r.wall)}/s (${(r.wall / base.wall).toFixed(3)}; cpu ${(r.cpu / base.cpu).toFixed(3)})`;

raw();
await floor();
for (let r = 0; r < ROUNDS; r++) {
  const base = raw();
  const b = bare64();
  const f = await floor();
  console.log(
    `round ${r + 1}: raw ${Math.round(base.wall)}/s, bare64 ${fmt(b, base)}, floor ${fmt(f, base)}`,
  );
}
fs.rmSync(dir, { recursive: true, force: true });
