import { fileURLToPath } from 'node:url';
import type { UserWorkspaceConfig } from 'vitest/config';

const root = fileURLToPath(new URL('.', import.meta.url));
const src = (pkg: string, file = 'index') => `${root}packages/${pkg}/src/${file}.ts`;

/**
 * Tests import workspace packages from their sources, so a change in one package is seen by the
 * tests of another without a rebuild. Child processes (spawnNode) resolve packages through
 * node_modules to `dist/`, which `pnpm test` builds first.
 */
export const workspaceAliases = [
  { find: /^@x\/oversync\/server$/, replacement: src('oversync', 'server/index') },
  { find: /^@x\/oversync\/client$/, replacement: src('oversync', 'client/index') },
  { find: /^@x\/dbx\/testing$/, replacement: src('dbx', 'testing/index') },
  { find: /^@x\/testkit\/bench$/, replacement: src('testkit', 'bench/index') },
  ...['core', 'writecoordinator', 'dbproxy', 'dbx', 'schemaops', 'oversync', 'testkit'].map((pkg) => ({
    find: new RegExp(`^@x/${pkg}$`),
    replacement: src(pkg),
  })),
];

/** Projects that never touch PostgreSQL, so they do not wait for the shared cluster to start. */
const WITHOUT_POSTGRES = new Set(['core', 'writecoordinator', 'dbproxy']);

/** The vitest globalSetup that starts (or joins) the run's shared PostgreSQL cluster. */
export const postgresGlobalSetup = src('testkit', 'vitest/global-setup');

export interface SharedProjectOptions {
  /**
   * Join the run's shared PostgreSQL cluster (a primary and two streaming replicas, started once per
   * run whichever projects ask for it) so `createTestDatabase()` can use it. Default: true except for
   * core, writecoordinator and dbproxy. A project without it can still call `createTestDatabase()`: each
   * test worker then starts a cluster of its own, which is slower.
   */
  postgres?: boolean;
}

export function sharedProject(
  name: string,
  dir: string,
  options: SharedProjectOptions = {},
): UserWorkspaceConfig {
  const postgres = options.postgres ?? !WITHOUT_POSTGRES.has(name);
  return {
    resolve: { alias: workspaceAliases },
    test: {
      name,
      root: dir,
      include: ['test/**/*.test.ts'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      ...(postgres ? { globalSetup: [postgresGlobalSetup] } : {}),
    },
  };
}
