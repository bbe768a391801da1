/**
 * The harness's sync server as its own process, so it can be SIGKILLed mid-commit and restarted
 * over the same database: `node --import tsx server-child.ts <dbUrl> <port> <retainedBundlesPerUser>
 * [<replicaUrl>,…]` (replicas are handed to the @x/dbx cluster, as `oversync-server --replica-url`).
 * Prints `LISTENING <port>`. Stdin commands: `ARM commit-start <delayMs>` (SIGKILL itself that long
 * after the next push commit starts, usually inside its transaction) and `ARM commit-end` (SIGKILL
 * itself once the next commit has committed in PostgreSQL but before the HTTP answer is written).
 */
import { tracingChannel } from 'node:diagnostics_channel';
import { createInterface } from 'node:readline';
import { createCluster } from '@x/dbx';
// Through node_modules to dist/, as every child process of the tests: rebuild after changing src/.
import { createSyncService, oversyncFastifyPlugin } from '@x/oversync/server';
import Fastify from 'fastify';
import { CONVERGENCE_SCHEMA, CONVERGENCE_TABLES } from './schema.js';

const [dbUrl = '', portArg = '0', retainedArg = '0', replicasArg = ''] = process.argv.slice(2);
const retained = Number(retainedArg);

let armed: { mode: 'commit-start'; delayMs: number } | { mode: 'commit-end' } | undefined;
const die = (why: string) => {
  process.stdout.write(`KILLED ${why}\n`);
  process.kill(process.pid, 'SIGKILL');
};
tracingChannel<string, { operation: string }>('x:oversync:push.commit').subscribe({
  start() {
    const a = armed;
    if (a?.mode !== 'commit-start') return;
    armed = undefined;
    setTimeout(() => die('commit-start'), a.delayMs);
  },
  end() {},
  asyncStart() {},
  asyncEnd() {
    if (armed?.mode !== 'commit-end') return;
    armed = undefined;
    die('commit-end');
  },
  error() {},
});
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, mode, delay] = line.trim().split(' ');
  if (cmd !== 'ARM') return;
  armed = mode === 'commit-end' ? { mode } : { mode: 'commit-start', delayMs: Number(delay ?? 0) };
});

const node = (connectionString: string) => ({ connectionString, options: '-c TimeZone=UTC' });
const cluster = createCluster({
  primary: node(dbUrl),
  replicas: replicasArg.split(',').filter(Boolean).map(node),
});
const service = createSyncService({
  db: cluster,
  registeredTables: CONVERGENCE_TABLES.map((t) => ({
    schema: CONVERGENCE_SCHEMA,
    table: t.table,
    syncKeyColumns: [...t.syncKeyColumns],
  })),
  limits: retained > 0 ? { retainedBundlesPerUser: retained } : {},
});
await service.bootstrap();
const app = Fastify({ logger: false });
// Count 5xx answers: each is a finding (issue #14 wants none for any client input).
app.addHook('onResponse', async (req, reply) => {
  if (reply.statusCode >= 500) process.stdout.write(`HTTP5XX ${reply.statusCode} ${req.method} ${req.url}\n`);
});
await app.register(oversyncFastifyPlugin, {
  service,
  userIdFromRequest: (req) => {
    const h = req.headers.authorization ?? '';
    return h.startsWith('Bearer ') ? h.slice(7) : undefined;
  },
});
await app.listen({ port: Number(portArg), host: '127.0.0.1' });
const addr = app.server.address();
process.stdout.write(`LISTENING ${typeof addr === 'object' && addr ? addr.port : 0}\n`);
process.once('SIGTERM', () => {
  void (async () => {
    await app.close();
    await service.close();
    await cluster.close();
    process.exit(0);
  })();
});
