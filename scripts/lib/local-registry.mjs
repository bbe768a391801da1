// A registry for the @x scope only, serving the packed tarballs, so that a README's install line
// (`npm install @x/dbx pg`) runs literally in an empty project: `.npmrc` points `@x:registry` here
// and every other package comes from the public registry, as it would for a user.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

export async function startLocalRegistry(packs) {
  const byName = new Map();
  const files = new Map();
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url ?? '/').replace(/^\/+/, '');
    if (url.startsWith('-/') && files.has(url.slice(2))) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(fs.readFileSync(files.get(url.slice(2))));
      return;
    }
    const doc = byName.get(url);
    if (!doc) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not_found"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(doc));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}/`;
  for (const p of packs) {
    const data = fs.readFileSync(p.tgz);
    const file = path.basename(p.tgz);
    files.set(file, p.tgz);
    const { version } = p.packed;
    byName.set(p.packed.name, {
      name: p.packed.name,
      'dist-tags': { latest: version },
      versions: {
        [version]: {
          ...p.packed,
          dist: {
            tarball: `${url}-/${file}`,
            integrity: `sha512-${crypto.createHash('sha512').update(data).digest('base64')}`,
            shasum: crypto.createHash('sha1').update(data).digest('hex'),
          },
        },
      },
    });
  }
  return { url, close: () => new Promise((resolve) => server.close(resolve)) };
}
