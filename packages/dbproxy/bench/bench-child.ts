/**
 * Benchmark worker. Modes (argv[2]):
 *   primary <db> <runtimeDir> <durability>   the dbproxy primary, plus a ZeroMQ ROUTER echo and a Unix-socket echo
 *   secondary <db> <runtimeDir> <durability> a dbproxy secondary; commands on stdin: latency, throughput
 *   direct <db> <durability>                 the baseline: writes the file itself (WAL, busy timeout, BEGIN IMMEDIATE)
 * Prints one JSON object per line.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { SqliteStatement } from '@x/writecoordinator';
import Database from 'better-sqlite3';
import { Dealer, Router } from 'zeromq';
import { z } from 'zod';
import { createDbProxy, defineWrite } from '../src/index.js';

const [mode, dbPath, a3, a4] = process.argv.slice(2);
const out = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
const BODY = 'x'.repeat(48);

const migrate = (db: { exec(sql: string): unknown }): void => {
  db.exec(
    'CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, writer TEXT NOT NULL, body TEXT NOT NULL)',
  );
};
const statements = new WeakMap<object, SqliteStatement>();
const writes = {
  insertRow: defineWrite({
    params: z.object({ writer: z.string(), body: z.string() }),
    handler: (db, p) => {
      // better-sqlite3 does not cache statements: prepare once per connection, as an app would
      let st = statements.get(db);
      if (st === undefined) {
        st = db.prepare('INSERT INTO bench (writer, body) VALUES (?, ?)');
        statements.set(db, st);
      }
      st.run(p.writer, p.body);
      return null;
    },
  }),
};

function commands(handle: (c: Record<string, unknown>) => Promise<void>): void {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    if (line.trim() === '') return;
    handle(JSON.parse(line) as Record<string, unknown>).catch((e) =>
      out({ event: 'error', message: String(e) }),
    );
  });
  rl.on('close', () => process.exit(0));
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since);
  return (d.user + d.system) / 1000;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

if (mode === 'primary' || mode === 'secondary') {
  const runtimeDir = a3!;
  const durability = (a4 ?? 'normal') as 'normal' | 'full';
  const proxy = createDbProxy({
    databasePath: dbPath!,
    runtimeDir,
    writes,
    migrate,
    durability,
    instanceId: `${mode}-${process.pid}`,
    timeouts: { defaultMs: 30_000 },
  });
  await proxy.start();
  if (proxy.role !== mode) throw new Error(`expected ${mode}, got ${proxy.role}`);
  const zmqEcho = `ipc://${join(runtimeDir, 'echo.zmq')}`;
  const unixEcho = join(runtimeDir, 'echo.sock');
  if (mode === 'primary') {
    const router = new Router({ linger: 0 });
    await router.bind(zmqEcho);
    void (async () => {
      for await (const [id, body] of router) await router.send([id!, body!]);
    })();
    const server = createServer((s: Socket) => s.pipe(s));
    await new Promise<void>((r) => server.listen(unixEcho, r));
  } else {
    // Wait until the link to the primary is up.
    await proxy.write('insertRow', { writer: 'warmup', body: BODY });
  }
  const cpuStart = process.cpuUsage();
  out({ event: 'ready', role: proxy.role });
  commands(async (c) => {
    if (c['cmd'] === 'latency') {
      const n = Number(c['n'] ?? 2000);
      const warm = 300;
      // Interleaved, one of each per round, so load from elsewhere hits all three alike:
      // a bare ZeroMQ echo, a bare Unix-socket echo (same two processes), a forwarded 1-row INSERT.
      const dealer = new Dealer({ linger: 0 });
      dealer.connect(zmqEcho);
      const sock = createConnection(unixEcho);
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.setNoDelay(true);
      const zmq: number[] = [];
      const unix: number[] = [];
      const fwd: number[] = [];
      for (let i = 0; i < n + warm; i++) {
        let t0 = process.hrtime.bigint();
        await dealer.send('ping');
        await dealer.receive();
        if (i >= warm) zmq.push(Number(process.hrtime.bigint() - t0) / 1000);
        t0 = process.hrtime.bigint();
        await new Promise<void>((r) => {
          sock.once('data', () => r());
          sock.write('ping\n');
        });
        if (i >= warm) unix.push(Number(process.hrtime.bigint() - t0) / 1000);
        t0 = process.hrtime.bigint();
        await proxy.write('insertRow', { writer: 'lat', body: BODY });
        if (i >= warm) fwd.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      dealer.close();
      sock.destroy();
      out({
        event: 'latency',
        zmq: { p50: pct(zmq, 50), p99: pct(zmq, 99) },
        unix: { p50: pct(unix, 50), p99: pct(unix, 99) },
        forwarded: { p50: pct(fwd, 50), p99: pct(fwd, 99) },
      });
    } else if (c['cmd'] === 'local-latency') {
      // the same 1-row write submitted by the primary itself: the coordinator and SQLite, no IPC
      const n = Number(c['n'] ?? 2000);
      const local: number[] = [];
      for (let i = 0; i < n + 300; i++) {
        const t0 = process.hrtime.bigint();
        await proxy.write('insertRow', { writer: 'local', body: BODY });
        if (i >= 300) local.push(Number(process.hrtime.bigint() - t0) / 1000);
      }
      out({ event: 'local-latency', p50: pct(local, 50), p99: pct(local, 99) });
    } else if (c['cmd'] === 'throughput') {
      const durationMs = Number(c['durationMs']);
      const concurrency = Number(c['concurrency'] ?? 128);
      let ops = 0;
      let errors = 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const until = t0 + durationMs;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < until) {
            try {
              await proxy.write('insertRow', { writer: 'tp', body: BODY });
              ops++;
            } catch {
              errors++;
            }
          }
        }),
      );
      out({ event: 'throughput', ops, errors, elapsedMs: performance.now() - t0, cpuMs: cpuMs(cpu0) });
    } else if (c['cmd'] === 'cpu') {
      out({ event: 'cpu', cpuMs: cpuMs(cpuStart) });
    } else if (c['cmd'] === 'exit') {
      out({ event: 'metrics', metrics: proxy.metrics() });
      await proxy.close();
      process.exit(0);
    }
  });
} else if (mode === 'direct') {
  const durability = (a3 ?? 'normal') as 'normal' | 'full';
  const db = new Database(dbPath!, { timeout: 5_000 });
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${durability === 'full' ? 'FULL' : 'NORMAL'}`);
  migrate(db);
  const begin = db.prepare('BEGIN IMMEDIATE');
  const insert = db.prepare('INSERT INTO bench (writer, body) VALUES (?, ?)');
  const commit = db.prepare('COMMIT');
  out({ event: 'ready', role: 'direct' });
  commands(async (c) => {
    if (c['cmd'] === 'throughput') {
      const durationMs = Number(c['durationMs']);
      let ops = 0;
      let busy = 0;
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const until = t0 + durationMs;
      while (performance.now() < until) {
        try {
          begin.run();
          insert.run('direct', BODY);
          commit.run();
          ops++;
        } catch (e) {
          if (db.inTransaction) db.exec('ROLLBACK');
          if (String((e as { code?: string }).code).startsWith('SQLITE_BUSY')) busy++;
          else throw e;
        }
      }
      out({ event: 'throughput', ops, busy, elapsedMs: performance.now() - t0, cpuMs: cpuMs(cpu0) });
    } else if (c['cmd'] === 'exit') {
      db.close();
      process.exit(0);
    }
  });
}
