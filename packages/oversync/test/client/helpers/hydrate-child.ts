// One hydrate in a fresh process, so its peak RSS is the client's own:
// `node --import tsx hydrate-child.ts <client|baseline> <dbPath> <baseUrl> <user>`.
// Prints one JSON line: { rows, ms, maxRssMb }.
import Database from 'better-sqlite3';
import { childClient } from './child-client.js';
import { SQLITE_BUSINESS_DDL } from './schema.js';

const [mode = 'client', dbPath = '', baseUrl = '', user = ''] = process.argv.slice(2);
const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.exec(SQLITE_BUSINESS_DDL);
const headers = { authorization: `Bearer ${user}`, 'oversync-source-id': `bench-baseline-${process.pid}` };

let rows = 0;
const t0 = performance.now();
if (mode === 'client') {
  const client = childClient(db, baseUrl, user, { snapshotChunkRows: 5000 });
  await client.open();
  const r = await client.attach(user);
  rows = r.restore?.rowCount ?? 0;
  await client.close();
} else {
  // The floor: page the same snapshot and bulk-insert it with no sync bookkeeping at all.
  const created = (await (
    await fetch(`${baseUrl}/sync/snapshot-sessions`, { method: 'POST', headers })
  ).json()) as { snapshot_id: string };
  const ins = db.prepare(`INSERT INTO users(id, name, email) VALUES (?, ?, ?)`);
  let after = 0;
  for (;;) {
    const page = (await (
      await fetch(
        `${baseUrl}/sync/snapshot-sessions/${created.snapshot_id}?after_row_ordinal=${after}&max_rows=5000`,
        {
          headers,
        },
      )
    ).json()) as {
      rows: Array<{ payload: { id: string; name: string; email: string } }>;
      next_row_ordinal: number;
      has_more: boolean;
    };
    db.transaction(() => {
      for (const r of page.rows) ins.run(r.payload.id, r.payload.name, r.payload.email);
    })();
    rows += page.rows.length;
    after = page.next_row_ordinal;
    if (!page.has_more) break;
  }
  await fetch(`${baseUrl}/sync/snapshot-sessions/${created.snapshot_id}`, { method: 'DELETE', headers });
}
const ms = performance.now() - t0;
const maxRssMb = process.resourceUsage().maxRSS / 1024;
db.close();
process.stdout.write(`${JSON.stringify({ rows, ms, maxRssMb })}\n`);
