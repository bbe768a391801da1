import type { TestProject } from 'vitest/node';
import { acquireSharedPostgres, releaseSharedPostgres, SHARED_PG_KEY } from '../postgres/shared.js';

/**
 * vitest globalSetup for projects that need PostgreSQL (added by `sharedProject(..., { postgres: true })`).
 * Every such project joins one cluster per run (a primary and two streaming replicas, or
 * DATABASE_URL), provided to tests as `inject('xTestkitPostgres')`; the last project's teardown
 * stops it.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const context = await acquireSharedPostgres();
  project.provide(SHARED_PG_KEY, context);
  return releaseSharedPostgres;
}
