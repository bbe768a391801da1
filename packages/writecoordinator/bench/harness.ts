/**
 * Stand-in for `@x/testkit/bench` with the same signatures (see notes/contracts.md), used until the
 * testkit lands; the bench switches its import when it does.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface BenchResult {
  name: string;
  value: number;
  unit: string;
  baseline: { name: string; value: number } | null;
  lowerIsBetter?: boolean;
}

export async function reportBench(packageDir: string, results: BenchResult[]): Promise<void> {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
  const file = path.join(root, 'bench-results', `${packageDir}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let existing: { results: Array<{ name: string }> } = { results: [] };
  try {
    existing = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {}
  const rows = results.map((r) => {
    const ratio =
      r.baseline === null || r.baseline.value === 0
        ? null
        : r.lowerIsBetter
          ? r.baseline.value / r.value
          : r.value / r.baseline.value;
    return { name: r.name, value: r.value, unit: r.unit, baseline: r.baseline, ratio };
  });
  const merged = [...existing.results.filter((e) => !rows.some((r) => r.name === e.name)), ...rows];
  const out = {
    package: packageDir,
    machine: { cpus: os.cpus().length, memory: os.totalmem(), node: process.version },
    results: merged,
  };
  fs.writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.table(
    rows.map((r) => ({ ...r, baseline: r.baseline ? `${r.baseline.name}=${r.baseline.value}` : '' })),
  );
}

export async function measureThroughput(
  fn: () => Promise<void> | void,
  opts: { durationMs?: number; concurrency?: number },
): Promise<{ ops: number; perSecond: number }> {
  const durationMs = opts.durationMs ?? 2_000;
  const concurrency = opts.concurrency ?? 1;
  let ops = 0;
  const start = performance.now();
  const end = start + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < end) {
      await fn();
      ops++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = performance.now() - start;
  return { ops, perSecond: (ops * 1000) / elapsed };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
