import { createWriteCoordinator } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { z } from 'zod';

const db = new Database('notes.db');
db.pragma('journal_mode = WAL'); // the coordinator needs a WAL database
db.exec('CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)');
const wc = createWriteCoordinator({ database: db });
wc.subscribe((e) => console.log('committed seq', e.seq, 'jobs', e.jobs.length));

// A job is a synchronous function of the database…
const first = await wc.submit(
  (d) => d.prepare('INSERT INTO notes VALUES (?, ?) ON CONFLICT (id) DO NOTHING').run('n1', 'hi').changes,
);
console.log('job inserted', first.value, 'row(s) at seq', first.seq);

// …or a named write dispatched through a registry (params validated by zod before queueing).
wc.register(
  'addNote',
  z.object({ id: z.string(), body: z.string() }),
  (d, p) =>
    d.prepare('INSERT INTO notes VALUES (?, ?) ON CONFLICT (id) DO NOTHING').run(p.id, p.body).changes,
);
const second = await wc.submit(
  { method: 'addNote', params: { id: 'n2', body: 'yo' } },
  // Retry with the same requestId and the recorded result comes back without running the job again
  // (run this file twice: the second run prints replayed: true).
  { requestId: 'add-note-n2', deadline: Date.now() + 5_000, durability: 'full' },
);
console.log('addNote', { value: second.value, seq: second.seq, replayed: second.replayed });

console.log(db.prepare('SELECT id, body FROM notes ORDER BY id').all());
await wc.close(); // the coordinator never closes the database: close it after
db.close();
