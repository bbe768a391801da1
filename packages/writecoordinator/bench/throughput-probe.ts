import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createWriteCoordinator } from '../src/index.js';
import { measureThroughput } from './harness.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wc-probe-'));
let k = 0;
function open() {
  const db = new Database(path.join(dir, `d${k++}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)');
  return db;
}
for (let round = 0; round < 3; round++) {
  {
    const db = open();
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    const n = 500_000;
    const t0 = performance.now();
    db.exec('BEGIN');
    for (let i = 0; i < n; i++) ins.run(i);
    db.exec('COMMIT');
    console.log('raw', Math.round((n * 1000) / (performance.now() - t0)));
    db.close();
  }
  {
    const db = open();
    db.exec(
      "CREATE TABLE m (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID; INSERT INTO m VALUES ('seq', 0)",
    );
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    const begin = db.prepare('BEGIN IMMEDIATE'),
      commit = db.prepare('COMMIT'),
      up = db.prepare("UPDATE m SET value = ? WHERE key = 'seq'");
    const n = 640_000;
    const t0 = performance.now();
    for (let b = 0; b < n / 64; b++) {
      begin.run();
      up.run(b);
      for (let i = 0; i < 64; i++) ins.run(i);
      commit.run();
    }
    console.log('b64+meta', Math.round((n * 1000) / (performance.now() - t0)));
    db.close();
  }
  {
    const db = open();
    const wc = createWriteCoordinator({ database: db });
    const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
    let i = 0;
    const job = () => ins.run(i++);
    const r = await measureThroughput(() => wc.submit(job) as unknown as Promise<void>, {
      durationMs: 1500,
      concurrency: 64,
    });
    console.log('wc', Math.round(r.perSecond), wc.metrics().meanBatchSize.toFixed(1));
    await wc.close();
    db.close();
  }
}
fs.rmSync(dir, { recursive: true, force: true });
