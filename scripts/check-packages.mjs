#!/usr/bin/env node
// Packs each public package exactly as `pnpm publish` would, installs the tarballs into an empty
// project outside the workspace, imports every public entry point with plain Node ESM resolution,
// and runs publint and @arethetypeswrong/cli on each tarball. Users install these packages one by
// one from npm; this is the check that they work that way.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(fileURLToPath(new URL('..', import.meta.url)));
const pnpm = ['--yes', 'pnpm@10.34.8'];
const run = (cmd, args, cwd, opts = {}) =>
  execFileSync(cmd, args, {
    cwd,
    stdio: opts.capture ? 'pipe' : 'inherit',
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
  });

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'x-pack-check-'));
const tarballs = path.join(work, 'tarballs');
const consumer = path.join(work, 'consumer');
fs.mkdirSync(tarballs);
fs.mkdirSync(consumer);
let failed = false;
try {
  const pkgs = fs
    .readdirSync(path.join(root, 'packages'))
    .map((dir) => ({
      dir,
      json: JSON.parse(fs.readFileSync(path.join(root, 'packages', dir, 'package.json'), 'utf8')),
    }))
    .filter((p) => !p.json.private);

  const entries = [];
  for (const p of pkgs) {
    const cwd = path.join(root, 'packages', p.dir);
    const out = run('npx', [...pnpm, 'pack', '--pack-destination', tarballs], cwd, { capture: true });
    const file = out
      .trim()
      .split('\n')
      .filter((l) => l.endsWith('.tgz'))
      .pop();
    if (!file) throw new Error(`pnpm pack printed no tarball for ${p.json.name}`);
    const tgz = path.isAbsolute(file) ? file : path.join(tarballs, path.basename(file));
    p.tgz = tgz;
    for (const sub of Object.keys(p.json.exports))
      entries.push(sub === '.' ? p.json.name : `${p.json.name}/${sub.slice(2)}`);
    console.log(`\n== publint ${p.json.name}`);
    run('npx', ['publint', 'run', tgz, '--strict'], root);
    console.log(`\n== attw ${p.json.name}`);
    run('npx', ['attw', tgz, '--profile', 'esm-only', '--format', 'table-flipped'], root);
  }

  // An empty project, outside the workspace, that installs the tarballs with npm (no workspace links,
  // no catalog), plus the optional peers that the server and client entry points need.
  fs.writeFileSync(
    path.join(consumer, 'package.json'),
    JSON.stringify({ name: 'x-consumer', version: '0.0.0', private: true, type: 'module' }, null, 2),
  );
  console.log('\n== npm install of the tarballs into an empty project');
  run(
    'npm',
    [
      'install',
      '--no-audit',
      '--no-fund',
      '--loglevel=error',
      ...pkgs.map((p) => p.tgz),
      'fastify@5',
      'better-sqlite3@12',
    ],
    consumer,
  );

  const smoke = entries.map((e) => `import * as m${entries.indexOf(e)} from '${e}';`).join('\n');
  const check = entries
    .map(
      (e, i) =>
        `if (Object.keys(m${i}).length === 0) throw new Error('${e} exports nothing');\nconsole.log('ok ${e}', Object.keys(m${i}).length, 'exports');`,
    )
    .join('\n');
  fs.writeFileSync(path.join(consumer, 'smoke.mjs'), `${smoke}\n${check}\n`);
  console.log('\n== smoke import of every public entry point');
  run('node', ['smoke.mjs'], consumer);
  console.log('\npackage check passed');
} catch (err) {
  failed = true;
  console.error(`\npackage check FAILED: ${err.message}`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
