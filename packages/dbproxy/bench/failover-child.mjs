/**
 * Failover bench worker: joins the election for argv[2] (database) with runtime dir argv[3], writes
 * continuously (`storm` writes in flight) and prints JSON lines: `ready`, `role`, `phase` (the
 * proxy's election phases, stamped when they happen), `first-ack` (the first write acknowledged
 * under each new epoch, stamped on arrival), `write-error`, `self-kill`.
 * With DBPROXY_REPORT_ACKS=1 it also prints `acked` (the `n` of each acknowledged write, batched).
 * Each row records the pid of the process that committed it (the primary's handler runs there).
 * DBPROXY_STALL_MS sets `heartbeat.stallTimeoutMs`.
 * stdin commands: `{ cmd: 'arm', epoch, phase }` makes the process SIGKILL itself when it reaches
 * that promotion phase of that epoch (a successor killed in the middle of its promotion);
 * `{ cmd: 'exit' }`.
 *
 * Plain JavaScript on the built package, not TypeScript through tsx: the bench respawns a process
 * after every kill, and tsx would add a second of startup to each of them.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { createInterface } from 'node:readline';
import { createDbProxy, defineWrite, ELECTION_CHANNEL } from '@x/dbproxy';
import { z } from 'zod';

const [databasePath, runtimeDir, name = `w-${process.pid}`] = process.argv.slice(2);
const CONCURRENCY = Number(process.env.DBPROXY_FAILOVER_CONCURRENCY ?? 2);
const REPORT_ACKS = process.env.DBPROXY_REPORT_ACKS === '1';
const STALL_MS = process.env.DBPROXY_STALL_MS;
const now = () => performance.timeOrigin + performance.now();
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

let armed = null;
diagnostics_channel.subscribe(ELECTION_CHANNEL, (m) => {
  const at = now();
  out({ event: 'phase', phase: m.phase, epoch: m.epoch, at });
  if (armed !== null && m.epoch === armed.epoch && m.phase === armed.phase) {
    // stdout is a pipe: synchronous on Linux, so this line is out before the process dies
    out({ event: 'self-kill', phase: m.phase, epoch: m.epoch, at });
    process.kill(process.pid, 'SIGKILL');
  }
});

const proxy = createDbProxy({
  databasePath,
  runtimeDir,
  instanceId: name,
  migrate: (db) =>
    db.exec(
      'CREATE TABLE IF NOT EXISTS bench (id INTEGER PRIMARY KEY, writer TEXT NOT NULL, n INTEGER, pid INTEGER)',
    ),
  writes: {
    insertRow: defineWrite({
      params: z.object({ writer: z.string(), n: z.number().int() }),
      handler: (db, p) => {
        db.prepare('INSERT INTO bench (writer, n, pid) VALUES (?, ?, ?)').run(p.writer, p.n, process.pid);
        return null;
      },
    }),
  },
  timeouts: { defaultMs: 10_000 },
  ...(STALL_MS === undefined ? {} : { heartbeat: { stallTimeoutMs: Number(STALL_MS) } }),
});
proxy.onRoleChange((e) => out({ event: 'role', role: e.role, epoch: e.epoch, at: now() }));

let ackedEpoch = 0;
let n = 0;
let acked = [];
const flushAcks = () => {
  if (acked.length > 0) out({ event: 'acked', ns: acked });
  acked = [];
};
if (REPORT_ACKS) setInterval(flushAcks, 50).unref();
let stopped = false;
async function writer() {
  while (!stopped) {
    const mine = n++;
    try {
      await proxy.write('insertRow', { writer: name, n: mine });
      if (REPORT_ACKS) acked.push(mine);
      // the epoch this process follows (or is) when the acknowledgement arrives
      if (proxy.epoch > ackedEpoch) {
        ackedEpoch = proxy.epoch;
        out({ event: 'first-ack', epoch: ackedEpoch, at: now() });
      }
    } catch (e) {
      if (stopped) return;
      out({ event: 'write-error', code: e?.code ?? String(e), at: now() });
    }
  }
}

await proxy.start();
out({ event: 'ready', role: proxy.role, epoch: proxy.epoch, pid: process.pid });
const writers = Array.from({ length: CONCURRENCY }, writer);

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === '') return;
  const c = JSON.parse(line);
  if (c.cmd === 'arm') {
    armed = c.epoch > 0 ? { epoch: c.epoch, phase: c.phase } : null;
    out({ event: 'armed', epoch: c.epoch, tag: c.tag });
  } else if (c.cmd === 'exit') {
    stopped = true;
    void Promise.allSettled(writers)
      .then(() => flushAcks())
      .then(() => proxy.close())
      .then(() => process.exit(0));
  }
});
