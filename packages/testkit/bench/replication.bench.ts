// How far behind the primary a streaming replica of the embedded cluster is: the time from a
// committed INSERT on the primary until the row is visible on the replica, against the primary's
// own write round trip; and how long a cluster takes to start, against a lone primary.

import { startPostgres } from '@x/testkit';
import { latencyPercentiles, reportBench } from '@x/testkit/bench';
import pg from 'pg';

const ROUNDS = 300;

async function timeStart(replicas: number): Promise<number> {
  const started = performance.now();
  const cluster = await startPostgres({ replicas, embedded: true });
  const ms = performance.now() - started;
  await cluster.stop();
  return ms;
}

const primaryStartMs = await timeStart(0);
const clusterStartMs = await timeStart(2);

const cluster = await startPostgres({ replicas: 1, embedded: true });
const replicaNode = cluster.replicas[0];
if (!replicaNode) throw new Error('no replica');
const primary = new pg.Client({ connectionString: cluster.primary.url });
const replica = new pg.Client({ connectionString: replicaNode.url });
await primary.connect();
await replica.connect();
await primary.query('CREATE TABLE bench (id int PRIMARY KEY, at timestamptz DEFAULT now())');
await cluster.waitForReplicas();

const writeMs: number[] = [];
const catchupMs: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const t0 = performance.now();
  await primary.query('INSERT INTO bench (id) VALUES ($1)', [i]);
  const t1 = performance.now();
  for (;;) {
    const { rowCount } = await replica.query('SELECT 1 FROM bench WHERE id = $1', [i]);
    if (rowCount) break;
  }
  const t2 = performance.now();
  writeMs.push(t1 - t0);
  catchupMs.push(t2 - t1);
}
await primary.end();
await replica.end();
await cluster.stop();

await reportBench('testkit', [
  ...latencyPercentiles('replica-catchup', catchupMs, {
    name: (p) => `primary-write-p${p}-ms`,
    samples: writeMs,
  }),
  {
    name: 'cluster-start-2-replicas-ms',
    value: clusterStartMs,
    unit: 'ms',
    baseline: { name: 'primary-start-ms', value: primaryStartMs },
    lowerIsBetter: true,
  },
]);
