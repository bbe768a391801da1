/**
 * The long convergence run (issue #14): `pnpm soak` from the workspace root builds, then runs
 * `tsx packages/oversync/test/convergence/soak.ts`. Defaults: 10 devices, 50 local write
 * transactions per second in total, 10 minutes of random edits, offline periods and kills.
 * Env: OVERSYNC_SOAK_DEVICES, OVERSYNC_SOAK_TPS, OVERSYNC_SOAK_SECONDS, OVERSYNC_SEED (replay),
 * OVERSYNC_SOAK_SERVERS (server processes behind a random per-request router, default 1),
 * DATABASE_URL (an external PostgreSQL instead of the embedded one). Prints the JSON summary,
 * writes it to bench-results/oversync-soak.json, and exits 1 unless the run converged.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { releaseSharedPostgres } from '@x/testkit';
import { runConvergence } from './harness.js';

const num = (name: string, fallback: number) => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};
const devices = num('OVERSYNC_SOAK_DEVICES', 10);
const seconds = num('OVERSYNC_SOAK_SECONDS', 600);
const seed = num('OVERSYNC_SEED', Math.floor(Math.random() * 2 ** 31));

const summary = await runConvergence({
  seed,
  devices,
  tps: num('OVERSYNC_SOAK_TPS', 50),
  durationMs: seconds * 1000,
  deviceKillsPerMinute: num('OVERSYNC_SOAK_DEVICE_KILLS_PER_MINUTE', 12),
  serverKillsPerMinute: num('OVERSYNC_SOAK_SERVER_KILLS_PER_MINUTE', 2),
  retainedBundlesPerUser: num('OVERSYNC_SOAK_RETAINED_BUNDLES', 200),
  maxQuietRounds: 20,
  servers: num('OVERSYNC_SOAK_SERVERS', 1),
});
await releaseSharedPostgres();
const text = JSON.stringify(summary, null, 2);
process.stdout.write(`${text}\n`);
const dir = join(import.meta.dirname, '../../../../bench-results');
mkdirSync(dir, { recursive: true });
const servers = num('OVERSYNC_SOAK_SERVERS', 1);
writeFileSync(
  join(dir, servers > 1 ? `oversync-soak-${servers}-servers.json` : 'oversync-soak.json'),
  `${text}\n`,
);
if (!summary.ok) process.stderr.write(`soak FAILED: seed ${seed} (replay with OVERSYNC_SEED=${seed})\n`);
process.exit(summary.ok ? 0 : 1);
