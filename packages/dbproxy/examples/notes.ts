import { randomUUID } from 'node:crypto';
import { createDbProxy, defineWrite } from '@x/dbproxy';
import { z } from 'zod';

const proxy = createDbProxy({
  databasePath: './notes.db',
  writes: {
    addNote: defineWrite({
      params: z.object({ id: z.string(), body: z.string() }),
      handler: (db, p) =>
        db.prepare('INSERT INTO notes (id, body) VALUES (?, ?) ON CONFLICT (id) DO NOTHING').run(p.id, p.body)
          .changes,
    }),
  },
  // runs on whichever process becomes primary, before it announces itself
  migrate: (db) => db.exec('CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT)'),
});

// Follow the commits of every process (started before our write, so it sees it too).
const requestId = randomUUID();
const stop = AbortSignal.timeout(10_000);
const followed = (async () => {
  for await (const change of proxy.changes({ signal: stop })) {
    if (change.type === 'gap') console.log('missed commits', change.afterSeq, '..', change.toSeq);
    else console.log('commit', change.seq, change.method, 'from', change.sourceInstanceId);
    if (change.type === 'write' && change.requestId === requestId) return;
  }
})();

const id = `note-${process.pid}-${Date.now()}`;
const { value, seq } = await proxy.write('addNote', { id, body: 'hello' }, { requestId });
console.log(`${proxy.role} wrote ${value} row at seq ${seq}`);
// read-your-writes: this process's reads wait for its own last write by default
// (another process can wait for the same commit with read(fn, { minSeq: seq }))
const count = await proxy.read((db) => db.prepare('SELECT count(*) AS n FROM notes').get() as { n: number });
console.log('notes in the file:', count.n);

await followed;
await proxy.close();
