// @x/oversync/client figures against our server on a private embedded PostgreSQL:
// - hydrate-100k-rows-per-s / hydrate-100k-peak-rss-mb: a fresh device attaching to a scope of
//   100,000 rows (snapshot staged, then one atomic swap), each in its own process; baseline = the
//   same snapshot paged and bulk-inserted with no sync bookkeeping.
// - server-commit-to-client-visible-p50-ms / -p99-ms: a watching device (SSE wake-up → pull)
//   sees a row another device committed; baseline = an explicit pull issued right after the commit.
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { spawnNode, tempDir } from '@x/testkit';
import { latencyPercentiles, reportBench } from '@x/testkit/bench';
import { type Device, openDevice } from '../test/client/helpers/device.js';
import { startTestServer } from '../test/client/helpers/server.js';
import { benchDatabase } from './setup.js';

const HYDRATE_ROWS = Number(process.env.HYDRATE_ROWS ?? 100_000);
const LATENCY_ROUNDS = Number(process.env.LATENCY_ROUNDS ?? 100);

const { pgCluster: cluster, url: dbUrl } = await benchDatabase('oversync_client_bench');
const server = await startTestServer({
  database: { url: dbUrl },
  createSchema: true,
  watch: true,
  retainedBundlesPerUser: 100_000,
});
const dir = await tempDir('oversync-client-bench');

async function attached(name: string, user: string, opts = {}): Promise<Device> {
  const d = openDevice(name, join(dir.path, `${name}.db`), server.baseUrl, user, opts);
  await d.client.open();
  await d.client.attach(user);
  return d;
}

// ---- hydrate ------------------------------------------------------------------------------
const hydrateUser = `bench-${randomUUID()}`;
const seed = await attached('seed', hydrateUser, { uploadLimit: 5000, downloadLimit: 5000 });
const seedStart = performance.now();
for (let done = 0; done < HYDRATE_ROWS; ) {
  const n = Math.min(20_000, HYDRATE_ROWS - done);
  seed.db.transaction(() => {
    const ins = seed.db.prepare(`INSERT INTO users(id, name, email) VALUES (?, ?, ?)`);
    for (let i = 0; i < n; i++) ins.run(randomUUID(), `user ${done + i}`, `user${done + i}@example.com`);
  })();
  await seed.client.pushPending();
  done += n;
}
console.error(`seeded ${HYDRATE_ROWS} rows in ${Math.round(performance.now() - seedStart)} ms`);
// Steady-state planner statistics (autovacuum would gather them within a minute; without them the
// server's snapshot join degrades to a nested loop, which measures the planner, not the client).
await server.query('ANALYZE');

async function hydrateChild(
  mode: 'client' | 'baseline',
): Promise<{ rows: number; ms: number; maxRssMb: number }> {
  const child = spawnNode(join(import.meta.dirname, '../test/client/helpers/hydrate-child.ts'), [
    mode,
    join(dir.path, `hydrate-${mode}.db`),
    server.baseUrl,
    hydrateUser,
  ]);
  const line = await child.waitForLine(/^\{/, 300_000);
  await child.wait();
  return JSON.parse(line) as { rows: number; ms: number; maxRssMb: number };
}
const baseline = await hydrateChild('baseline');
const ours = await hydrateChild('client');
if (ours.rows !== HYDRATE_ROWS || baseline.rows !== HYDRATE_ROWS)
  throw new Error('hydrate row count mismatch');

// ---- commit → visible ---------------------------------------------------------------------
const latencyUser = `bench-${randomUUID()}`;
let commitAt = 0;
let pulled: Promise<number> = Promise.resolve(0);
let puller: Device | undefined;
const writer = await attached('writer', latencyUser, {
  fetch: async (u: string, i: RequestInit) => {
    const res = await fetch(u, i);
    // the request that commits: a push session's commit, or the one-request push
    if ((u.endsWith('/commit') || u.endsWith('/sync/push')) && res.ok) {
      commitAt = performance.now();
      // baseline: a pull issued the moment the commit is acknowledged
      const p = puller;
      if (p) pulled = p.client.pullToStable().then(() => performance.now());
    }
    return res;
  },
});
const watcher = await attached('watcher', latencyUser, {
  watch: { mode: 'auto', fallbackIntervalMs: 30_000 },
});
puller = await attached('puller', latencyUser);
watcher.client.start();
const visible = (d: Device, id: string) =>
  d.db.prepare(`SELECT 1 FROM users WHERE id = ?`).get(id) !== undefined;

const watchMs: number[] = [];
const pullMs: number[] = [];
for (let i = 0; i < LATENCY_ROUNDS + 5; i++) {
  const id = randomUUID();
  const seen = new Promise<number>((resolve) => {
    const off = watcher.client.on('applied', () => {
      if (visible(watcher, id)) {
        off();
        resolve(performance.now());
      }
    });
  });
  writer.db.prepare(`INSERT INTO users(id, name) VALUES (?, 'live')`).run(id);
  await writer.client.pushPending();
  const t0 = commitAt;
  const t1 = await seen;
  const t2 = await pulled;
  if (!visible(puller, id)) throw new Error('puller did not see the row');
  if (i >= 5) {
    watchMs.push(t1 - t0);
    pullMs.push(t2 - t0);
  }
}
await watcher.client.stop();

await reportBench('oversync', [
  {
    name: 'hydrate-100k-rows-per-s',
    value: (ours.rows / ours.ms) * 1000,
    unit: 'rows/s',
    baseline: {
      name: 'snapshot-paged-bulk-insert-no-sync-state',
      value: (baseline.rows / baseline.ms) * 1000,
    },
  },
  {
    name: 'hydrate-100k-peak-rss-mb',
    value: ours.maxRssMb,
    unit: 'MB',
    lowerIsBetter: true,
    baseline: { name: 'snapshot-paged-bulk-insert-no-sync-state', value: baseline.maxRssMb },
  },
  ...latencyPercentiles('server-commit-to-client-visible', watchMs, {
    name: (p) => `explicit-pull-after-commit-p${p}-ms`,
    samples: pullMs,
  }),
]);

for (const d of [seed, writer, watcher, puller]) await d?.close();
await server.close();
await dir.cleanup();
await cluster.stop();
