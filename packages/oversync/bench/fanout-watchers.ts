/**
 * The watcher process of fanout.bench.ts: holds many `GET /sync/watch` SSE streams open on raw
 * `node:http` sockets and timestamps every `event: bundle` frame.
 *
 * `node --import tsx fanout-watchers.ts '<WatcherConfig JSON>'`. Stdout: `CONNECTED <n> <failed>`
 * once every stream has its 200 headers (the server has subscribed it by then). Stdin commands:
 * `EXPECT <file>` (a JSON object user index → last committed bundle_seq: waits until every stream
 * has seen its user's sequence, at most `settleMs`, then writes the report next to it as
 * `<file>.report.json` and prints `REPORTED`), `EXIT`.
 *
 * The report holds every event as `[userIndex, bundleSeq, epochMs]` (epoch = `performance.timeOrigin
 * + performance.now()`, the same clock as the writer's on one machine), every notification a plain
 * `LISTEN` connection of this process received as `[userPk, bundleSeq, epochMs]` (the baseline),
 * the streams that ended or failed, and the per-stream gaps (events never delivered: `drops`).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createInterface } from 'node:readline';
import { SignJWT } from 'jose';
import pg from 'pg';

export interface WatcherConfig {
  readonly baseUrl: string;
  readonly secret: string;
  /** User ids, indexed: the watchers of this process watch `users[assign[i]]`. */
  readonly users: readonly string[];
  /** One entry per stream: the index of its user. */
  readonly assign: readonly number[];
  /** `after_bundle_seq` per user index (its current sequence: no initial event). */
  readonly afterSeq: readonly number[];
  /** Streams being opened at once. */
  readonly connectConcurrency: number;
  readonly settleMs: number;
  /** A plain `LISTEN` on the server's NOTIFY channel in this process: the baseline's receiver. */
  readonly listen: { readonly url: string; readonly channel: string };
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as WatcherConfig;
const now = () => performance.timeOrigin + performance.now();
const out = (line: string) => process.stdout.write(`${line}\n`);
const url = new URL(cfg.baseUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });

const key = new TextEncoder().encode(cfg.secret);
const tokens = await Promise.all(
  cfg.users.map((u) =>
    new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(u).setExpirationTime('2h').sign(key),
  ),
);

type Stream = { user: number; last: number; gaps: number; ended: boolean; req?: http.ClientRequest };
const streams: Stream[] = cfg.assign.map((user) => ({
  user,
  last: cfg.afterSeq[user] ?? 0,
  gaps: 0,
  ended: false,
}));
// Flat event log: user, seq, time (grown on demand).
let events = new Float64Array(3 * 65536);
let nEvents = 0;
let failed = 0;
let closing = false;
const waiters = new Set<() => void>();

function record(s: Stream, seq: number, t: number): void {
  if (nEvents * 3 + 3 > events.length) {
    const bigger = new Float64Array(events.length * 2);
    bigger.set(events);
    events = bigger;
  }
  events[nEvents * 3] = s.user;
  events[nEvents * 3 + 1] = seq;
  events[nEvents * 3 + 2] = t;
  nEvents++;
  if (seq > s.last + 1) s.gaps += seq - s.last - 1;
  if (seq > s.last) s.last = seq;
  for (const w of waiters) w();
}

function open(s: Stream, index: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: `/sync/watch?after_bundle_seq=${s.last}`,
        agent,
        headers: {
          authorization: `Bearer ${tokens[s.user]}`,
          'oversync-source-id': `watcher-${process.pid}-${index}`,
          accept: 'text/event-stream',
        },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          resolve(false);
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          const t = now();
          buf += chunk;
          for (;;) {
            const end = buf.indexOf('\n\n');
            if (end < 0) break;
            const frame = buf.slice(0, end);
            buf = buf.slice(end + 2);
            if (!frame.startsWith('event: bundle')) continue; // heartbeats
            const data = frame.slice(frame.indexOf('data: ') + 6);
            record(s, (JSON.parse(data) as { bundle_seq: number }).bundle_seq, t);
          }
        });
        res.on('close', () => {
          if (!closing) s.ended = true;
        });
        resolve(true);
      },
    );
    req.on('error', () => {
      if (!closing) s.ended = true;
      resolve(false);
    });
    s.req = req;
    req.end();
  });
}

// The baseline: the same notifications at a plain PostgreSQL LISTEN, timestamped in this process.
const notified: number[] = [];
const listener = new pg.Client({ connectionString: cfg.listen.url });
await listener.connect();
listener.on('notification', (msg) => {
  const t = now();
  const p = JSON.parse(msg.payload ?? '{}') as { user_pk: number; bundle_seq: number };
  notified.push(p.user_pk, p.bundle_seq, t);
});
await listener.query(`LISTEN "${cfg.listen.channel}"`);

// Open the streams, `connectConcurrency` at a time (the server's accept backlog is finite).
let next = 0;
await Promise.all(
  Array.from({ length: Math.max(1, cfg.connectConcurrency) }, async () => {
    while (next < streams.length) {
      const i = next++;
      if (!(await open(streams[i] as Stream, i))) failed++;
    }
  }),
);
out(`CONNECTED ${streams.length - failed} ${failed}`);

async function settle(expected: Record<string, number>): Promise<void> {
  const behind = () => streams.some((s) => !s.ended && s.last < (expected[String(s.user)] ?? 0));
  if (!behind()) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(done, cfg.settleMs);
    function done() {
      clearTimeout(timer);
      waiters.delete(check);
      resolve();
    }
    function check() {
      if (!behind()) done();
    }
    waiters.add(check);
  });
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(' ');
  void (async () => {
    if (cmd === 'EXPECT' && arg) {
      const expected = JSON.parse(readFileSync(arg, 'utf8')) as Record<string, number>;
      await settle(expected);
      let tailMissing = 0;
      for (const s of streams) tailMissing += Math.max(0, (expected[String(s.user)] ?? 0) - s.last);
      const report = {
        streams: streams.length,
        failed,
        ended: streams.filter((s) => s.ended).length,
        gaps: streams.reduce((n, s) => n + s.gaps, 0),
        tailMissing,
        events: Array.from(events.subarray(0, nEvents * 3)),
        notified,
        rssMb: process.memoryUsage().rss / 2 ** 20,
      };
      writeFileSync(`${arg}.report.json`, JSON.stringify(report));
      out('REPORTED');
    } else if (cmd === 'EXIT') {
      closing = true;
      for (const s of streams) s.req?.destroy();
      agent.destroy();
      await listener.end().catch(() => undefined);
      process.exit(0);
    }
  })();
});
