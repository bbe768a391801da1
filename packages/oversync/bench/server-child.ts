// The sync server of the server benches, in its own process so that its RSS, event-loop delay and
// SQL round trips are its own: @x/oversync/server (dist) under fastify on 127.0.0.1:<random>, over
// the database given as argv[2] (the business schema of test/server/fixture.ts already created).
// Line protocol on stdio: prints `ready <baseUrl>`; on `reset` it clears the event-loop histogram
// and the statement counter and notes the RSS (prints `ok`); on `stats` prints one JSON line
// ({ rssMb, baseRssMb, peakRssMb, eldMaxMs, eldP99Ms, statements, cpuMs: CPU
// time since the reset, cpuUserMs: its user part }); on `exit` it closes.
// The peak is `resourceUsage().maxRSS`, the process' lifetime peak: measure one big push per process.

import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { createCluster } from '@x/dbx';
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Fastify from 'fastify';
import pg from 'pg';
import { BUSINESS_TABLES } from '../test/server/fixture.js';

const url = process.argv[2];
if (!url) throw new Error('usage: server-child.ts <database url>');

// Every statement the server sends (BEGIN/COMMIT included) is one round trip to PostgreSQL.
let statements = 0;
/** BENCH_SLOW_SQL_MS: statements slower than this are printed to stderr. */
const SLOW_MS = Number(process.env.BENCH_SLOW_SQL_MS ?? 0);
/** BENCH_LOG_SQL=1: every statement's text is printed to stderr (`sql <text>`). */
const LOG_SQL = process.env.BENCH_LOG_SQL === '1';
const clientQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  statements++;
  if (LOG_SQL) {
    const sql = typeof args[0] === 'string' ? args[0] : String((args[0] as { text?: string })?.text);
    process.stderr.write(`sql ${sql.replace(/\s+/g, ' ').slice(0, 200)}\n`);
  }
  const r = (clientQuery as (...a: unknown[]) => unknown).apply(this, args);
  if (SLOW_MS > 0 && r instanceof Promise) {
    const t0 = performance.now();
    const sql = typeof args[0] === 'string' ? args[0] : String((args[0] as { text?: string })?.text);
    r.then(
      () => {
        const ms = performance.now() - t0;
        if (ms >= SLOW_MS)
          process.stderr.write(`slow ${Math.round(ms)} ms: ${sql.replace(/\s+/g, ' ').slice(0, 300)}\n`);
      },
      () => {},
    );
  }
  return r;
} as typeof pg.Client.prototype.query;

const db = createCluster({ primary: url, pool: { max: Number(process.env.BENCH_POOL_MAX ?? 10) } });
const service = createSyncService({
  db,
  registeredTables: BUSINESS_TABLES,
  limits: { retainedBundlesPerUser: 1_000_000 },
});
await service.bootstrap();
const app = Fastify({ logger: false });
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => req.headers['x-user'] as string | undefined,
});
const baseUrl = await app.listen({ port: 0, host: '127.0.0.1' });

const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();
const mb = (bytes: number) => bytes / (1024 * 1024);
let baseRss = process.memoryUsage.rss();
let baseCpu = process.cpuUsage();

/**
 * BENCH_CPU_PROF=<file>: a CPU profile of the server from `reset` to `stats`, written to <file>
 * (the first such span, or the BENCH_CPU_PROF_SPAN=<n>th).
 */
const PROF = process.env.BENCH_CPU_PROF;
const inspector = PROF ? new Session() : undefined;
let spans = 0;
const PROF_SPAN = Number(process.env.BENCH_CPU_PROF_SPAN ?? 1);
const post = (method: string, params?: object) =>
  new Promise<unknown>((res, rej) =>
    inspector!.post(method, params ?? {}, (e: Error | null, r?: unknown) => (e ? rej(e) : res(r))),
  );
if (inspector) {
  inspector.connect();
  await post('Profiler.enable');
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(`ready ${baseUrl}\n`);
for await (const line of lines) {
  const cmd = line.trim();
  if (cmd === 'reset') {
    eld.reset();
    statements = 0;
    baseRss = process.memoryUsage.rss();
    baseCpu = process.cpuUsage();
    if (inspector) await post('Profiler.start');
    process.stdout.write('ok\n');
  } else if (cmd === 'stats') {
    if (inspector && PROF) {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      // one reset-to-stats span only: the first (the bench's run), or BENCH_CPU_PROF_SPAN=<n>'s
      if (++spans === PROF_SPAN) writeFileSync(PROF, JSON.stringify(profile));
    }
    process.stdout.write(
      `${JSON.stringify({
        rssMb: mb(process.memoryUsage.rss()),
        baseRssMb: mb(baseRss),
        peakRssMb: process.resourceUsage().maxRSS / 1024,
        eldMaxMs: eld.max / 1e6,
        eldP99Ms: eld.percentile(99) / 1e6,
        statements,
        cpuMs: (() => {
          const c = process.cpuUsage(baseCpu);
          return (c.user + c.system) / 1000;
        })(),
        cpuUserMs: process.cpuUsage(baseCpu).user / 1000,
      })}\n`,
    );
  } else if (cmd === 'exit') {
    break;
  }
}
eld.disable();
lines.close();
await app.close();
await service.close();
await db.close();
process.exit(0);
