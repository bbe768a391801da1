#!/usr/bin/env node
// Runs the benchmarks of every workspace package (or of the packages named on the command line:
// `node scripts/bench.mjs dbx writecoordinator`, or `node ../../scripts/bench.mjs <dir>` from a
// package). Each `bench/*.bench.ts` runs as its own `node --import tsx` child, one after another,
// from the repo root, and writes/merges its figures into `bench-results/<package-dir>.json`
// through `@x/testkit/bench`. Stale result files of the selected packages are removed first, so
// a file only ever holds figures of this run. Prints one combined table at the end.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const resultsDir = process.env.X_BENCH_RESULTS_DIR ?? path.join(root, 'bench-results');

/** Every workspace package directory: { dir: 'dbx', path: '/…/packages/dbx' }. */
function workspacePackages() {
  const found = [];
  for (const group of ['packages', 'apps']) {
    const base = path.join(root, group);
    if (!fs.existsSync(base)) continue;
    for (const dir of fs.readdirSync(base).sort()) {
      if (fs.existsSync(path.join(base, dir, 'package.json')))
        found.push({ dir, path: path.join(base, dir) });
    }
  }
  return found;
}

function select(all, args) {
  if (args.length === 0) return all;
  return args.map((arg) => {
    const byName = all.find((p) => p.dir === arg || p.path === path.resolve(arg));
    if (!byName) {
      console.error(`bench: no workspace package "${arg}" (known: ${all.map((p) => p.dir).join(', ')})`);
      process.exit(2);
    }
    return byName;
  });
}

function formatTable(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const selected = select(workspacePackages(), process.argv.slice(2));
const failures = [];
const ran = [];
const notes = [];

for (const pkg of selected) {
  const benchDir = path.join(pkg.path, 'bench');
  const files = fs.existsSync(benchDir)
    ? fs
        .readdirSync(benchDir)
        .filter((f) => f.endsWith('.bench.ts'))
        .sort()
    : [];
  fs.rmSync(path.join(resultsDir, `${pkg.dir}.json`), { force: true });
  if (files.length === 0) {
    notes.push(`${pkg.dir}: skipped, no bench/*.bench.ts`);
    continue;
  }
  ran.push(pkg.dir);
  for (const file of files) {
    const rel = path.relative(root, path.join(benchDir, file));
    console.log(`\n▶ ${rel}`);
    const started = Date.now();
    const result = spawnSync(process.execPath, ['--import', 'tsx', rel], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, X_BENCH_PACKAGE: pkg.dir, X_BENCH_RESULTS_DIR: resultsDir },
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (result.status !== 0) {
      failures.push(`${rel} (${result.signal ? `signal ${result.signal}` : `exit ${result.status}`})`);
      console.error(`✗ ${rel} failed after ${seconds}s`);
    } else {
      console.log(`✓ ${rel} (${seconds}s)`);
    }
  }
}

const rows = [['package', 'name', 'value', 'unit', 'baseline', 'ratio', 'load (1 5 15 min)']];
for (const dir of ran) {
  const file = path.join(resultsDir, `${dir}.json`);
  if (!fs.existsSync(file)) {
    notes.push(`${dir}: ran but wrote no ${path.relative(root, file)}`);
    continue;
  }
  const data = JSON.parse(fs.readFileSync(file, 'utf8'));
  for (const r of data.results ?? []) {
    rows.push([
      dir,
      r.name,
      r.value,
      r.unit,
      r.baseline ? `${r.baseline.name} = ${r.baseline.value}` : '-',
      r.ratio === null || r.ratio === undefined ? '-' : `${r.ratio}x`,
      Array.isArray(r.load) ? r.load.join(' ') : '-',
    ]);
  }
}

console.log(`\n=== benchmark results (${path.relative(root, resultsDir) || resultsDir}/) ===`);
console.log(rows.length > 1 ? formatTable(rows) : '(no results)');
for (const note of notes) console.log(`note: ${note}`);
if (failures.length > 0) {
  console.error(`\n${failures.length} benchmark file(s) failed:\n  ${failures.join('\n  ')}`);
  process.exit(1);
}
