#!/usr/bin/env node
// Every TypeScript/JavaScript block of a package README is an example file shown verbatim:
//
//   ```ts example=examples/notes.ts
//
// `node scripts/readme-examples.mjs` fails, listing each block that differs from its file (or has no
// `example=`, or names a missing file) and each example file no block shows; `--write` regenerates
// the blocks from the files. scripts/run-examples.mjs runs the files against the packed packages.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { publicPackages } from './lib/pack.mjs';

const CODE_LANGS = new Set(['ts', 'typescript', 'js', 'javascript', 'mjs', 'tsx']);
const FENCE = /^```(\S*)(.*)$/;

/** The fenced blocks of a README: `{ lang, info, example, install, start, end, body }` (lines). */
export function readmeBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = FENCE.exec(lines[i]);
    if (!open) continue;
    let j = i + 1;
    while (j < lines.length && lines[j] !== '```') j++;
    const info = open[2].trim();
    blocks.push({
      lang: open[1],
      info,
      example: /(?:^|\s)example=(\S+)/.exec(info)?.[1] ?? null,
      install: /(?:^|\s)install(?:\s|$)/.test(info),
      line: i + 1,
      start: i,
      end: j,
      body: lines.slice(i + 1, j).join('\n'),
    });
    i = j;
  }
  return blocks;
}

/** The install commands of a README's ```sh install block, e.g. `{ npm: 'npm install …', pnpm: 'pnpm add …' }`. */
export function installLines(text) {
  const out = {};
  for (const b of readmeBlocks(text).filter((b) => b.install)) {
    for (const l of b.body.split('\n')) {
      const cmd = l.trim();
      const pm = cmd.startsWith('npm ') ? 'npm' : cmd.startsWith('pnpm ') ? 'pnpm' : null;
      if (pm) out[pm] = [...(out[pm] ?? []), cmd];
    }
  }
  return out;
}

/** Example files of a package (relative paths, `examples/*.ts|.mjs`). */
export function exampleFiles(pkgPath) {
  const dir = path.join(pkgPath, 'examples');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => /\.(ts|mts|mjs|js)$/.test(f))
    .sort()
    .map((f) => `examples/${f}`);
}

function checkPackage(pkg, write) {
  const readmePath = path.join(pkg.path, 'README.md');
  const problems = [];
  if (!fs.existsSync(readmePath)) return [`${pkg.json.name}: no README.md`];
  const text = fs.readFileSync(readmePath, 'utf8');
  const lines = text.split('\n');
  const shown = new Set();
  // From the last block up, so that rewriting one keeps the line numbers of those above.
  const blocks = readmeBlocks(text).reverse();
  for (const b of blocks) {
    const where = `${pkg.dir}/README.md:${b.line}`;
    if (!CODE_LANGS.has(b.lang)) continue;
    if (!b.example) {
      problems.push(`${where}: a \`\`\`${b.lang} block without example=<file>`);
      continue;
    }
    const file = path.join(pkg.path, b.example);
    shown.add(b.example);
    if (!fs.existsSync(file)) {
      problems.push(`${where}: ${b.example} does not exist`);
      continue;
    }
    const want = fs.readFileSync(file, 'utf8').replace(/\n$/, '');
    if (want === b.body) continue;
    if (write) lines.splice(b.start + 1, b.end - b.start - 1, ...want.split('\n'));
    else problems.push(`${where}: differs from ${b.example} (node scripts/readme-examples.mjs --write)`);
  }
  for (const f of exampleFiles(pkg.path))
    if (!shown.has(f)) problems.push(`${pkg.dir}/${f}: no README block shows it (\`\`\`ts example=${f})`);
  if (write) fs.writeFileSync(readmePath, lines.join('\n'));
  return problems;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const write = process.argv.includes('--write');
  const problems = publicPackages().flatMap((p) => checkPackage(p, write));
  if (problems.length > 0) {
    console.error(`README examples out of step:\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log(
    write ? 'README example blocks written from the files' : 'README example blocks match their files',
  );
}
