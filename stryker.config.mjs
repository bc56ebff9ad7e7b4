// @ts-check
/**
 * StrykerJS config for `npm run mutate` (outside CI: hours on a busy machine).
 *
 *   npm run mutate                                        # the whole security path
 *   npm run mutate -- --mutate 'src/policy/**\/*.ts'      # one folder
 *   MUTATE_TESTS='test/policy.test.ts,test/security-mutants.test.ts' npm run mutate -- --mutate 'src/policy/**\/*.ts'
 *
 * The tap runner runs each test file in its own node process and, with
 * per-test coverage, only the files that reach a mutant. MUTATE_TESTS narrows
 * the files (e.g. to pure unit tests, skipping the Postgres-backed pool tests
 * that cost ~15 s per mutant); the score is then a lower bound.
 */
const defaultTests = [
  'test/attest-*.test.ts',
  'test/crl.test.ts',
  'test/collateral-cache.test.ts',
  'test/collateral-pccs.test.ts',
  'test/pccs-client-edges.test.ts',
  'test/pck-info.test.ts',
  'test/dcap-*.test.ts',
  'test/engine-*.test.ts',
  'test/wasm-engine-*.test.ts',
  'test/dial.test.ts',
  'test/evidence-*.test.ts',
  'test/intel-api-*.test.ts',
  'test/noop-verifier.test.ts',
  'test/ra-tls-client-*.test.ts',
  'test/policy.test.ts',
  'test/pool-*.test.ts',
  'test/ra-tls-pool-*.test.ts',
  'test/reattestation.test.ts',
  'test/security-mutants*.test.ts',
  'test/telemetry.test.ts',
  'test/test-authority.test.ts',
];
const testFiles = process.env.MUTATE_TESTS ? process.env.MUTATE_TESTS.split(',') : defaultTests;

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'tap',
  tap: {
    testFiles: testFiles,
    // The second preload carries coverage out of the DCAP engines' worker threads
    // (see the script): without it their code counts as "no coverage".
    nodeArgs: [
      '--import',
      'tsx',
      '--test-reporter=tap',
      '-r',
      '{{hookFile}}',
      '-r',
      './scripts/stryker-worker-coverage.cjs',
      '{{testFile}}',
    ],
    forceBail: true,
  },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  typescriptChecker: {
    prioritizePerformanceOverAccuracy: true,
  },
  mutate: [
    'src/evidence/**/*.ts',
    // The strict DER reader every certificate and CRL of the security path goes through.
    'src/util/x509-der.ts',
    'src/verification/**/*.ts',
    'src/policy/**/*.ts',
    'src/attest/**/*.ts',
    'src/connection/**/*.ts',
    'src/pool/**/*.ts',
  ],
  ignorePatterns: ['dist', 'coverage', 'reports', '.stryker-tmp', 'benchmarks'],
  coverageAnalysis: 'perTest',
  concurrency: 1,
  timeoutMS: 60000,
  timeoutFactor: 2,
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: {
    fileName: 'reports/mutation/index.html',
  },
  jsonReporter: {
    fileName: 'reports/mutation/mutation.json',
  },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
