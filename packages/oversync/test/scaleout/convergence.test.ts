/**
 * The convergence harness in the scale-out setting (issue #19, point 5): three server processes on
 * one PostgreSQL database (with its streaming replica), every device request to a random one,
 * random kills of any of them, then synced until quiet and checked row for row and edit for edit.
 * One short seed here; `OVERSYNC_SOAK_SERVERS=3 pnpm soak` runs the long version.
 * OVERSYNC_SEED=<n>[,<n>…] replays chosen seeds (the workload and the routing, not the timing).
 */
import { describe, expect, it } from 'vitest';
import { runConvergence } from '../convergence/harness.js';

const SEEDS = (process.env.OVERSYNC_SEED ?? '1901').split(',').map(Number);

describe('devices converge with three server processes behind a random router', () => {
  for (const seed of SEEDS) {
    it(`seed ${seed}: every device equals the server and every acknowledged edit is accounted for`, async () => {
      const summary = await runConvergence({ seed, devices: 5, tps: 25, durationMs: 8_000, servers: 3 });
      const report = `seed ${seed} (replay with OVERSYNC_SEED=${seed}):\n${JSON.stringify(summary, null, 2)}`;
      process.stdout.write(`${JSON.stringify(summary)}\n`);
      expect(
        {
          divergentRows: summary.divergentRows,
          wedgedDevices: summary.wedgedDevices.length,
          unaccountedEdits: summary.unaccountedEdits,
          fkViolations: summary.fkViolations,
          deviceCrashes: summary.deviceCrashes.length,
        },
        report,
      ).toEqual({
        divergentRows: 0,
        wedgedDevices: 0,
        unaccountedEdits: 0,
        fkViolations: 0,
        deviceCrashes: 0,
      });
    }, 240_000);
  }
});
