/**
 * The short convergence run (issue #14, point 6): a few seeds of five device processes (four of
 * one user, one of another; server-wins, merge and client-wins resolvers) and a server process,
 * with random edits, offline periods and SIGKILLs, then synced until quiet and checked row for
 * row and acknowledged edit for edit (harness.ts, accounting.ts).
 *
 * Part of the test command. Seeds: OVERSYNC_SEED=<n>[,<n>…] replays chosen ones. Child processes
 * load @x/oversync from dist/, which `pnpm test` builds first.
 */
import { describe, expect, it } from 'vitest';
import { runConvergence } from './harness.js';

const SEEDS = (process.env.OVERSYNC_SEED ?? '1401,1402,1403').split(',').map(Number);

describe('devices always converge', () => {
  for (const seed of SEEDS) {
    it(`seed ${seed}: every device equals the server and every acknowledged edit is accounted for`, async () => {
      const summary = await runConvergence({ seed, devices: 5, tps: 25, durationMs: 8_000 });
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
    }, 180_000);
  }
});
