import { defineConfig } from 'vitest/config';

// One root config: every package's tests run in one pass, importing workspace sources through the
// `@topiary/source` export condition, so no build is needed first.
export default defineConfig({
  resolve: { conditions: ['@topiary/source'] },
  ssr: { resolve: { conditions: ['@topiary/source'] } },
  test: {
    include: ['packages/*/src/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './scripts/summary-reporter.ts'],
  },
});
