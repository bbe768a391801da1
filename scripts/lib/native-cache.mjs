// One npm cache for every throwaway project of check-packages.mjs and run-examples.mjs, seeded so that
// better-sqlite3's `prebuild-install` finds its binary there instead of compiling SQLite from source.
//
// Why: better-sqlite3 installs with `prebuild-install || node-gyp rebuild`. prebuild-install downloads
// the binary from GitHub releases; where github.com is unreachable (this CI machine resolves only the
// npm registry) it fails and node-gyp compiles the SQLite amalgamation: minutes per project on 2 cores,
// and every empty project (one per package and package manager) did it again, several at once.
// prebuild-install first looks in `<npm cache>/_prebuilds/` for the exact download URL it would fetch
// (util.js cachedPrebuild in prebuild-install 7): we put the binary there, for the version the install
// lines resolve, built once, so every later install (npm and pnpm, whose install scripts inherit
// `npm_config_cache`) unpacks it in milliseconds. zeromq 6 ships its binaries in the npm tarball and
// needs nothing.
//
// The binary comes from the workspace's own better-sqlite3 when the versions match (same Node, same
// machine: it is the binary the tests use), else from one `npm install` in a scratch project (a single
// compile, kept in the cache for the next run). The cache lives in ~/.cache/x-workspace-ci/npm (or
// $X_CI_NPM_CACHE) so that a CI machine that keeps its home directory compiles nothing at all.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/** The npm cache directory shared by every throwaway project. */
export const npmCacheDir =
  process.env.X_CI_NPM_CACHE ?? path.join(os.homedir(), '.cache', 'x-workspace-ci', 'npm');

/** Environment for installs in throwaway projects: the shared cache, no audit, no fund. */
export const installEnv = {
  npm_config_cache: npmCacheDir,
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
};

const libc = () => {
  if (process.platform !== 'linux') return '';
  // prebuild-install names musl builds `linuxmusl`; glibc builds are plain `linux`.
  return process.report?.getReport().header.glibcVersionRuntime ? '' : 'musl';
};

/** Where prebuild-install 7 looks for a cached download of `better-sqlite3@version` on this Node. */
function cachedPrebuildPath(version) {
  const url =
    `https://github.com/WiseLibs/better-sqlite3/releases/download/v${version}/` +
    `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}${libc()}-${process.arch}.tar.gz`;
  const digest = crypto.createHash('sha512').update(url).digest('hex').slice(0, 6);
  return path.join(
    npmCacheDir,
    '_prebuilds',
    `${digest}-${path.basename(url).replace(/[^a-zA-Z0-9.]+/g, '-')}`,
  );
}

const sh = (cmd, args, cwd) =>
  execFileSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...installEnv },
  });

/**
 * Makes sure the shared cache holds a better-sqlite3 prebuild for the version `range` resolves to
 * (the highest published match, as npm and pnpm pick). `root` is the workspace root (its
 * better-sqlite3 binary is reused when the versions agree). Returns what it did, for the log.
 */
export function seedBetterSqlite3(root, range = '>=11 <13') {
  fs.mkdirSync(path.join(npmCacheDir, '_prebuilds'), { recursive: true });
  const listed = JSON.parse(sh('npm', ['view', `better-sqlite3@${range}`, 'version', '--json'], root));
  // npm lists them in publication order, not by version: take the highest release.
  const key = (v) =>
    v
      .split('.')
      .map((n) => n.padStart(8, '0'))
      .join('.');
  const version = [listed]
    .flat()
    .filter((v) => /^\d+\.\d+\.\d+$/.test(v))
    .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    .pop();
  const target = cachedPrebuildPath(version);
  if (fs.existsSync(target)) return `better-sqlite3 ${version}: prebuild already cached`;

  let pkgDir = null;
  let source = 'the workspace build';
  try {
    // The workspace's copy, through a package that depends on it (pnpm does not hoist it to the root).
    const req = createRequire(path.join(root, 'packages', 'dbproxy', 'package.json'));
    const dir = path.dirname(req.resolve('better-sqlite3/package.json'));
    if (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version === version) pkgDir = dir;
  } catch {}
  let scratch = null;
  if (pkgDir === null) {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'x-native-'));
    fs.writeFileSync(path.join(scratch, 'package.json'), '{"name":"x-native","private":true}\n');
    sh('npm', ['install', '--no-save', `better-sqlite3@${version}`], scratch);
    pkgDir = path.join(scratch, 'node_modules', 'better-sqlite3');
    source = 'one npm install (compiled once)';
  }
  const binary = path.join(pkgDir, 'build', 'Release', 'better_sqlite3.node');
  if (!fs.existsSync(binary)) throw new Error(`no better-sqlite3 binary at ${binary}`);
  // The layout of a release asset: build/Release/better_sqlite3.node, unpacked into the package.
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'x-prebuild-'));
  fs.mkdirSync(path.join(stage, 'build', 'Release'), { recursive: true });
  fs.copyFileSync(binary, path.join(stage, 'build', 'Release', 'better_sqlite3.node'));
  const tmp = `${target}.${process.pid}.tmp`;
  execFileSync('tar', ['-czf', tmp, '-C', stage, 'build']);
  fs.renameSync(tmp, target);
  fs.rmSync(stage, { recursive: true, force: true });
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  return `better-sqlite3 ${version}: prebuild cached from ${source}`;
}
