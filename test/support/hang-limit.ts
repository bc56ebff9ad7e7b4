/**
 * A per-test time limit for the pg-free pool tests, which finish in well under a
 * second each. A test whose awaited event never comes (a connect callback never
 * called, a release that releases nothing, a retry loop that never ends) then fails
 * on its own, naming itself, within this limit, instead of holding its file until
 * `--test-timeout` (180 s) ends the whole run. Given as the options argument:
 * `test('…', hangLimit, async () => …)`.
 *
 * It also makes `npm run mutate` count such a mutant as killed (the test failed)
 * rather than timed out: the tap runner runs a file without `--test`, where
 * `--test-timeout` does not apply.
 */
export const hangLimit = { timeout: 20_000 } as const;
