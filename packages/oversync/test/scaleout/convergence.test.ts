/**
 * The convergence harness in the scale-out setting (issue #19, point 5): three server processes on
 * one PostgreSQL database (with its streaming replica), every device request to a random one,
 * random kills of any of them, then synced until quiet and checked row for row and edit for edit.
 * One short seed here; `OVERSYNC_SOAK_SERVERS=3 pnpm soak` runs the long version.
 * OVERSYNC_SEED=<n>[,<n>…] replays chosen seeds (the workload and the routing, not the timing).
 */
import { describeConvergence } from '../convergence/describe-convergence.js';

describeConvergence(
  'devices converge with three server processes behind a random router',
  '1901',
  { devices: 5, tps: 25, durationMs: 8_000, servers: 3 },
  240_000,
);
