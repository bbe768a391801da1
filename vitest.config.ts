import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: ['packages/*/vitest.config.ts', 'apps/*/vitest.config.ts'],
    // No root globalSetup: projects that need PostgreSQL get the testkit global setup from
    // `sharedProject()` in vitest.shared.ts and share one cluster (a primary and two streaming
    // replicas) per run through `inject()`; projects that do not need it never start it. Tests
    // that inject faults start their own cluster.
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
