#!/usr/bin/env node
// Runs every README example as a user gets it: packs the public packages (lib/pack.mjs, the same
// packing as check-packages.mjs), serves the tarballs as the @x scope of a local registry, and for
// each package and each package manager (npm and pnpm) makes an empty project, runs the README's
// install line(s) literally, copies the package's examples/ in and runs each example twice (a second
// run over the same files and database must work too). Examples that need PostgreSQL get
// DATABASE_URL: a fresh database per project on the embedded server of @x/testkit (or on the server
// of DATABASE_URL when set).
//
//   node scripts/run-examples.mjs [--pm npm,pnpm] [--only dbx,oversync] [--keep]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startLocalRegistry } from './lib/local-registry.mjs';
import { installEnv, seedBetterSqlite3 } from './lib/native-cache.mjs';
import { PNPM, packAll, publicPackages, root } from './lib/pack.mjs';
import { exampleFiles, installLines } from './readme-examples.mjs';

const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1].split(',') : null;
};
const managers = arg('--pm') ?? ['npm', 'pnpm'];
const only = arg('--only');
const keep = process.argv.includes('--keep');
const CONCURRENCY = Number(process.env.EXAMPLES_CONCURRENCY ?? 4);
const RUN_TIMEOUT_MS = 120_000;
const tsxLoader = pathToFileURL(createRequire(path.join(root, 'package.json')).resolve('tsx')).href;

function sh(command, cwd, env = {}, timeoutMs = 1_800_000) {
  return new Promise((resolve) => {
    const child = spawn(command, { cwd, shell: true, env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), signal, out });
    });
  });
}

const started = Date.now();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'x-examples-'));
const tarballs = path.join(work, 'tarballs');
fs.mkdirSync(tarballs);
let pgCluster = null;
let registry = null;
const failures = [];
try {
  const pkgs = packAll(publicPackages(), tarballs);
  registry = await startLocalRegistry(pkgs);
  // One npm cache for every project, holding a better-sqlite3 binary for this Node: without it each
  // install compiles SQLite from source (lib/native-cache.mjs says why), minutes per project.
  console.log(seedBetterSqlite3(root));

  // PostgreSQL for the examples that need it (the testkit is the workspace's, never the example's).
  const testkit = await import(pathToFileURL(path.join(root, 'packages/testkit/dist/index.js')).href);
  const pg = createRequire(path.join(root, 'packages/testkit/package.json'))('pg');
  pgCluster = await testkit.startPostgres({});
  const adminUrl = pgCluster.primary.url;
  const databaseFor = async (name) => {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    try {
      await c.query(`drop database if exists ${name} with (force)`);
      await c.query(`create database ${name}`);
    } finally {
      await c.end();
    }
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    return u.href;
  };

  const jobs = [];
  for (const p of pkgs) {
    if (only && !only.includes(p.dir)) continue;
    const readme = fs.readFileSync(path.join(p.path, 'README.md'), 'utf8');
    const lines = installLines(readme);
    const examples = exampleFiles(p.path);
    for (const pm of managers) {
      if (!lines[pm])
        failures.push(`${p.dir}: the README has no \`${pm}\` install line in a \`\`\`sh install block`);
      else jobs.push({ p, pm, lines: lines[pm], examples });
    }
  }

  const runJob = async ({ p, pm, lines, examples }) => {
    const t0 = Date.now();
    const dir = path.join(work, `${p.dir}-${pm}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'package.json'),
      `${JSON.stringify({ name: `example-${p.dir}`, private: true, type: 'module' }, null, 2)}\n`,
    );
    // What publishing gives a user: the @x scope resolves (here, to the tarballs); all else is npm's.
    fs.writeFileSync(path.join(dir, '.npmrc'), `@x:registry=${registry.url}\n`);
    const log = [];
    const fail = (what, r) => {
      failures.push(`${p.dir} (${pm}): ${what}\n${r.out.trim().split('\n').slice(-40).join('\n')}`);
      return false;
    };
    for (const line of lines) {
      const cmd = pm === 'pnpm' ? line.replace(/^pnpm /, `npx ${PNPM.join(' ')} `) : line;
      const r = await sh(cmd, dir, installEnv);
      log.push(`$ ${line}`);
      if (r.code !== 0) return fail(`\`${line}\` exited ${r.code}`, r);
    }
    fs.mkdirSync(path.join(dir, 'examples'));
    for (const e of examples) fs.copyFileSync(path.join(p.path, e), path.join(dir, e));
    const env = { DATABASE_URL: await databaseFor(`examples_${p.dir}_${pm}`.replace(/\W/g, '_')) };
    for (const e of examples) {
      for (const attempt of [1, 2]) {
        const r = await sh(`node --import ${tsxLoader} ${e}`, dir, env, RUN_TIMEOUT_MS);
        if (r.code !== 0)
          return fail(`${e} (run ${attempt}) exited ${r.code}${r.signal ? ` (${r.signal})` : ''}`, r);
        if (attempt === 1) log.push(`$ node ${e}\n${r.out.trim()}`);
      }
    }
    console.log(
      `\n== ${p.json.name} with ${pm}: ${examples.length} example(s), each run twice, exit 0 (${((Date.now() - t0) / 1000).toFixed(1)} s)\n${log.join('\n')}`,
    );
    return true;
  };

  const queue = [...jobs];
  await Promise.all(
    Array.from({ length: Math.min(CONCURRENCY, queue.length) }, async () => {
      while (queue.length > 0) await runJob(queue.shift());
    }),
  );
} catch (err) {
  failures.push(`runner: ${err.stack ?? err}`);
} finally {
  await registry?.close();
  await pgCluster?.stop();
  if (!keep) fs.rmSync(work, { recursive: true, force: true });
  else console.log(`kept ${work}`);
}
const took = `${((Date.now() - started) / 1000).toFixed(0)} s`;
if (failures.length > 0) {
  console.error(`\nREADME examples FAILED (${took}):\n\n${failures.join('\n\n')}`);
  process.exit(1);
}
console.log(`\nREADME examples passed (${took})`);
