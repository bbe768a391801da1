// Packing the public packages exactly as `pnpm publish` would, shared by check-packages.mjs (publint,
// attw, import smoke test) and run-examples.mjs (README install lines and examples).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const PNPM = ['--yes', 'pnpm@10.34.8'];

export const run = (cmd, args, cwd, opts = {}) =>
  execFileSync(cmd, args, {
    cwd,
    stdio: opts.capture ? 'pipe' : 'inherit',
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
  });

/** The public packages of the workspace: `{ dir, path, json }` (json = the workspace package.json). */
export function publicPackages() {
  return fs
    .readdirSync(path.join(root, 'packages'))
    .filter((dir) => fs.existsSync(path.join(root, 'packages', dir, 'package.json')))
    .map((dir) => ({
      dir,
      path: path.join(root, 'packages', dir),
      json: JSON.parse(fs.readFileSync(path.join(root, 'packages', dir, 'package.json'), 'utf8')),
    }))
    .filter((p) => !p.json.private);
}

/**
 * Packs each package into `dest` with `pnpm pack` (workspace: and catalog: ranges rewritten as on
 * publish); adds `tgz` (absolute path) and `packed` (the package.json inside the tarball).
 */
export function packAll(pkgs, dest) {
  for (const p of pkgs) {
    const out = run('npx', [...PNPM, 'pack', '--pack-destination', dest], p.path, { capture: true });
    const file = out
      .trim()
      .split('\n')
      .filter((l) => l.endsWith('.tgz'))
      .pop();
    if (!file) throw new Error(`pnpm pack printed no tarball for ${p.json.name}`);
    p.tgz = path.isAbsolute(file) ? file : path.join(dest, path.basename(file));
    p.packed = JSON.parse(run('tar', ['-xzOf', p.tgz, 'package/package.json'], dest, { capture: true }));
  }
  return pkgs;
}
