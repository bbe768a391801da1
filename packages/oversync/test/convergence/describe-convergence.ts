/**
 * The convergence test of one setting, shared by the one-server run (convergence.test.ts) and the
 * three-server run (scaleout/convergence.test.ts): one vitest case per seed, each asserting that
 * every device equals the server and every acknowledged edit is accounted for, with the whole
 * summary in the failure message. `OVERSYNC_SEED=<n>[,<n>…]` replays chosen seeds.
 */
import { describe, expect, it } from 'vitest';
import { type ConvergenceOptions, runConvergence } from './harness.js';

export function describeConvergence(
  title: string,
  defaultSeeds: string,
  options: Partial<ConvergenceOptions>,
  timeoutMs: number,
): void {
  const seeds = (process.env.OVERSYNC_SEED ?? defaultSeeds).split(',').map(Number);
  describe(title, () => {
    for (const seed of seeds) {
      it(
        `seed ${seed}: every device equals the server and every acknowledged edit is accounted for`,
        async () => {
          const summary = await runConvergence({ ...options, seed });
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
        },
        timeoutMs,
      );
    }
  });
}
