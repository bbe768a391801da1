import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createWriteCoordinator } from '../src/index.js';
import { measureThroughput } from './harness.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wc-probe-'));
const db = new Database(path.join(dir, 'x.db'));
db.exec('PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)');
const wc = createWriteCoordinator({ database: db });
const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
let i = 0;
const job = () => ins.run(i++);
const r = await measureThroughput(() => wc.submit(job) as unknown as Promise<void>, {
  durationMs: 4000,
  concurrency: 64,
});
console.log('wc', Math.round(r.perSecond));
await wc.close();
db.close();
fs.rmSync(dir, { recursive: true, force: true });
