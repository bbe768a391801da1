import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: ['packages/*/vitest.config.ts', 'apps/*/vitest.config.ts'],
    // One PostgreSQL cluster (a primary and two streaming replicas) per run, shared by every
    // project through `inject()`; tests that inject faults start their own.
    globalSetup: ['./packages/testkit/src/vitest/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
