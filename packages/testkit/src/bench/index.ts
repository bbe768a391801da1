/**
 * @x/testkit/bench: the benchmark harness. Each `bench/*.bench.ts` measures its figures together
 * with a baseline from the same run and calls `reportBench(packageDir, results)`.
 */

import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { TestkitError } from '../errors.js';
import { parseOptions } from '../internal/options.js';

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: { name: string; value: number } | null;
  /** For latencies and other lower-is-better figures: the ratio is then baseline / value. */
  lowerIsBetter?: boolean;
}

export interface BenchRecord {
  name: string;
  value: number;
  unit: string;
  baseline: { name: string; value: number } | null;
  ratio: number | null;
  /** The machine's load average (1, 5, 15 min) when the figure was reported. */
  load?: number[];
}

export interface BenchFile {
  package: string;
  machine: { cpus: number; memory: number; node: string; load?: number[] };
  results: BenchRecord[];
}

export const DEFAULT_THROUGHPUT_DURATION_MS = 2_000;
export const DEFAULT_THROUGHPUT_CONCURRENCY = 1;
/** Overrides where result files go (default: `<workspace root>/bench-results`). */
export const BENCH_RESULTS_DIR_ENV = 'X_BENCH_RESULTS_DIR';

/** The workspace root (the nearest directory up from cwd holding pnpm-workspace.yaml), else cwd. */
export function workspaceRoot(from: string = process.cwd()): string {
  let dir = resolve(from);
  for (;;) {
    if (existsSync(join(dir, 'pnpm-workspace.yaml'))) return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(from);
    dir = up;
  }
}

export function benchResultsPath(packageDir: string): string {
  const dir = process.env[BENCH_RESULTS_DIR_ENV] ?? join(workspaceRoot(), 'bench-results');
  return join(dir, `${packageDir}.json`);
}

/** ratio = value / baseline.value, or baseline.value / value when lower is better; null without a baseline. */
export function benchRatio(result: BenchResult): number | null {
  if (!result.baseline || !Number.isFinite(result.baseline.value) || !Number.isFinite(result.value))
    return null;
  const ratio = result.lowerIsBetter
    ? result.baseline.value / result.value
    : result.value / result.baseline.value;
  return Number.isFinite(ratio) ? Number(ratio.toFixed(3)) : null;
}

function round(n: number): number {
  if (!Number.isFinite(n)) return n;
  const abs = Math.abs(n);
  const digits = abs >= 1000 ? 1 : abs >= 1 ? 3 : 6;
  return Number(n.toFixed(digits));
}

export function machineInfo(): BenchFile['machine'] {
  return { cpus: cpus().length, memory: totalmem(), node: process.version, load: loadNow() };
}

/** The load average (1, 5, 15 min), two decimals: printed and stored beside every figure. */
export function loadNow(): number[] {
  return loadavg().map((l) => Math.round(l * 100) / 100);
}

/** A text table of results (also used by scripts/bench.mjs). */
export function formatBenchTable(records: readonly BenchRecord[]): string {
  const rows = [
    ['name', 'value', 'unit', 'baseline', 'baseline value', 'ratio'],
    ...records.map((r) => [
      r.name,
      String(r.value),
      r.unit,
      r.baseline?.name ?? '-',
      r.baseline ? String(r.baseline.value) : '-',
      r.ratio === null ? '-' : `${r.ratio}x`,
    ]),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((row) => (row[i] ?? '').length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/**
 * Prints the results and merges them by name into `bench-results/<packageDir>.json`
 * (`{ package, machine, results: [{ name, value, unit, baseline, ratio }] }`).
 */
export async function reportBench(packageDir: string, results: BenchResult[]): Promise<void> {
  if (!/^[\w.-]+$/.test(packageDir)) {
    throw new TestkitError('TESTKIT_INVALID_OPTIONS', 'packageDir must be a directory name like "dbx"', {
      details: { packageDir },
    });
  }
  for (const r of results) {
    if (
      typeof r.name !== 'string' ||
      r.name.length === 0 ||
      typeof r.value !== 'number' ||
      !Number.isFinite(r.value)
    ) {
      throw new TestkitError(
        'TESTKIT_INVALID_OPTIONS',
        `bench result ${JSON.stringify(r.name)} needs a name and a finite value`,
        {
          details: { name: r.name, value: r.value },
        },
      );
    }
  }
  const load = loadNow();
  const records: BenchRecord[] = results.map((r) => ({
    name: r.name,
    value: round(r.value),
    unit: r.unit,
    baseline: r.baseline ? { name: r.baseline.name, value: round(r.baseline.value) } : null,
    ratio: benchRatio(r),
    load,
  }));
  const path = benchResultsPath(packageDir);
  let previous: BenchRecord[] = [];
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as Partial<BenchFile>;
    if (Array.isArray(parsed.results)) previous = parsed.results;
  } catch {
    // no file yet (or unreadable): start fresh
  }
  const byName = new Map(previous.map((r) => [r.name, r]));
  for (const r of records) byName.set(r.name, r);
  const file: BenchFile = { package: packageDir, machine: machineInfo(), results: [...byName.values()] };
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`);
  await rename(tmp, path);
  process.stdout.write(`\n${packageDir} (load average ${load.join(' ')})\n${formatBenchTable(records)}\n`);
}

const throughputOptions = z.strictObject({
  durationMs: z.number().positive().default(DEFAULT_THROUGHPUT_DURATION_MS),
  concurrency: z.number().int().min(1).default(DEFAULT_THROUGHPUT_CONCURRENCY),
});

/**
 * Calls `fn` back to back from `concurrency` loops for `durationMs` and counts completed calls.
 * A call that throws fails the measurement.
 */
export async function measureThroughput(
  fn: () => Promise<void> | void,
  opts: { durationMs?: number; concurrency?: number } = {},
): Promise<{ ops: number; perSecond: number }> {
  const { durationMs, concurrency } = parseOptions(throughputOptions, opts, 'measureThroughput');
  let ops = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        await fn();
        ops++;
      }
    }),
  );
  const elapsed = performance.now() - start;
  return { ops, perSecond: (ops * 1000) / elapsed };
}

/**
 * The p-th percentile (p in 0..100; a fraction 0 < p < 1 is read as p * 100, so 0.99 is p99) by
 * linear interpolation between closest ranks. NaN for an empty list.
 */
export function percentile(sortedOrUnsorted: number[], p: number): number {
  if (sortedOrUnsorted.length === 0) return Number.NaN;
  const pct = p > 0 && p < 1 ? p * 100 : p;
  if (!(pct >= 0 && pct <= 100)) {
    throw new TestkitError('TESTKIT_INVALID_OPTIONS', 'percentile p must be within 0..100', {
      details: { p },
    });
  }
  const xs = [...sortedOrUnsorted].sort((a, b) => a - b);
  const rank = (pct / 100) * (xs.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  const a = xs[lo] as number;
  const b = xs[hi] as number;
  return a + (b - a) * (rank - lo);
}

/**
 * Lower-is-better latency results, one per percentile in `ps` (default p50 and p99), each named
 * `${name}-p<p>-${unit}` and set against the same percentile of the baseline's samples.
 */
export function latencyPercentiles(
  name: string,
  samples: number[],
  baseline: { name: (p: number) => string; samples: number[] },
  opts: { unit?: string; ps?: readonly number[] } = {},
): BenchResult[] {
  const unit = opts.unit ?? 'ms';
  return (opts.ps ?? [50, 99]).map((p) => ({
    name: `${name}-p${p}-${unit}`,
    value: percentile(samples, p),
    unit,
    baseline: { name: baseline.name(p), value: percentile(baseline.samples, p) },
    lowerIsBetter: true,
  }));
}
