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
  ...['writecoordinator', 'dbproxy', 'dbx', 'schemaops', 'oversync', 'testkit'].map((pkg) => ({
    find: new RegExp(`^@x/${pkg}$`),
    replacement: src(pkg),
  })),
];

export function sharedProject(name: string, dir: string): UserWorkspaceConfig {
  return {
    resolve: { alias: workspaceAliases },
    test: {
      name,
      root: dir,
      include: ['test/**/*.test.ts'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
    },
  };
}
