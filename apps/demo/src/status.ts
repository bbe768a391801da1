/** `demo status`: the server's status (sync, schemaops ledger, dbx cluster) and a device's processes. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export async function printStatus(o: {
  server?: string | undefined;
  dir?: string | undefined;
}): Promise<number> {
  let ok = true;
  if (o.server) {
    try {
      const r = await fetch(`${o.server}/demo/status`);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const s = (await r.json()) as Record<string, unknown>;
      process.stdout.write(`server ${o.server}\n${JSON.stringify(s, null, 2)}\n`);
    } catch (e) {
      ok = false;
      process.stderr.write(`server ${o.server}: unreachable (${String(e)})\n`);
    }
  }
  if (o.dir) {
    const files = existsSync(o.dir) ? readdirSync(o.dir).filter((f) => /^status-.*\.json$/.test(f)) : [];
    if (files.length === 0) {
      ok = false;
      process.stderr.write(`device ${o.dir}: no status files (is \`demo device --dir ${o.dir}\` running?)\n`);
    }
    for (const f of files.sort()) {
      process.stdout.write(`device ${o.dir} ${f}\n${readFileSync(join(o.dir, f), 'utf8')}\n`);
    }
  }
  return ok ? 0 : 1;
}
