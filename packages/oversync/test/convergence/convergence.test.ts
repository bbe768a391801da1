/**
 * The short convergence run (issue #14, point 6): a few seeds of five device processes (four of
 * one user, one of another; server-wins, merge and client-wins resolvers) and a server process,
 * with random edits, offline periods and SIGKILLs, then synced until quiet and checked row for
 * row and acknowledged edit for edit (harness.ts, accounting.ts).
 *
 * Part of the test command. Seeds: OVERSYNC_SEED=<n>[,<n>…] replays chosen ones. Child processes
 * load @x/oversync from dist/, which `pnpm test` builds first.
 */
import { describeConvergence } from './describe-convergence.js';

describeConvergence(
  'devices always converge',
  '1401,1402,1403',
  { devices: 5, tps: 25, durationMs: 8_000 },
  180_000,
);
