#!/usr/bin/env node
// Packs each public package exactly as `pnpm publish` would and runs publint and
// @arethetypeswrong/cli on each tarball; then, for each package on its own, installs its tarball and
// those of the workspace packages it depends on (@x/core under every library) into an empty project
// outside the workspace and imports every public entry point with plain Node ESM resolution. Users
// install these packages one by one from npm; this is the check that they work that way.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { installEnv, seedBetterSqlite3 } from './lib/native-cache.mjs';
import { packAll, publicPackages, root, run } from './lib/pack.mjs';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'x-pack-check-'));
const tarballs = path.join(work, 'tarballs');
fs.mkdirSync(tarballs);
let failed = false;
try {
  const pkgs = packAll(publicPackages(), tarballs);
  // Every throwaway project shares one npm cache holding a better-sqlite3 binary for this Node
  // (lib/native-cache.mjs): without it each one compiles SQLite from source.
  console.log(`== ${seedBetterSqlite3(root)}`);
  const byName = new Map(pkgs.map((p) => [p.json.name, p]));
  for (const p of pkgs) {
    console.log(`\n== publint ${p.json.name}`);
    run('npx', ['publint', 'run', p.tgz, '--strict'], root);
    console.log(`\n== attw ${p.json.name}`);
    run('npx', ['attw', p.tgz, '--profile', 'esm-only', '--format', 'table-flipped'], root);
  }

  // Each package alone: an empty project outside the workspace installs its tarball plus the
  // tarballs of the workspace packages it depends on (transitively: @x/schemaops brings @x/dbx,
  // which brings @x/core), with npm (no workspace links, no catalog), and imports every public entry
  // point. A workspace dependency missing from a package.json fails here, as it would for a user.
  for (const p of pkgs) {
    const closure = new Set([p.json.name]);
    const queue = [p];
    while (queue.length > 0) {
      const q = queue.pop();
      for (const dep of Object.keys({ ...q.json.dependencies, ...q.json.peerDependencies })) {
        const d = byName.get(dep);
        if (d !== undefined && !closure.has(dep)) {
          closure.add(dep);
          queue.push(d);
        }
      }
    }
    const consumer = path.join(work, `consumer-${p.dir}`);
    fs.mkdirSync(consumer);
    fs.writeFileSync(
      path.join(consumer, 'package.json'),
      JSON.stringify({ name: 'x-consumer', version: '0.0.0', private: true, type: 'module' }, null, 2),
    );
    const tgzs = [...closure].map((name) => byName.get(name).tgz);
    // The peers, optional ones included (the entry points import them: @x/oversync/server needs
    // fastify, the client better-sqlite3), each at the range the tarball declares, the way a user
    // adds them: a range that admits a version that does not install fails here.
    const peers = new Map();
    for (const name of closure)
      for (const [dep, range] of Object.entries(byName.get(name).packed.peerDependencies ?? {}))
        if (!byName.has(dep)) peers.set(dep, range);
    const peerSpecs = [...peers].map(([dep, range]) => `${dep}@${range}`);
    console.log(
      `\n== npm install of ${[...closure].join(' + ')} alone into an empty project, with peers ${peerSpecs.join(', ') || '(none)'}`,
    );
    run('npm', ['install', '--loglevel=error', ...tgzs, ...peerSpecs], consumer, { env: installEnv });

    const entries = Object.keys(p.json.exports).map((sub) =>
      sub === '.' ? p.json.name : `${p.json.name}/${sub.slice(2)}`,
    );
    const smoke = entries.map((e, i) => `import * as m${i} from '${e}';`).join('\n');
    const check = entries
      .map(
        (e, i) =>
          `if (Object.keys(m${i}).length === 0) throw new Error('${e} exports nothing');\nconsole.log('ok ${e}', Object.keys(m${i}).length, 'exports');`,
      )
      .join('\n');
    fs.writeFileSync(path.join(consumer, 'smoke.mjs'), `${smoke}\n${check}\n`);
    console.log(`\n== smoke import of every public entry point of ${p.json.name}`);
    run('node', ['smoke.mjs'], consumer);
  }
  console.log('\npackage check passed');
} catch (err) {
  failed = true;
  console.error(`\npackage check FAILED: ${err.message}`);
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
