/**
 * The RaTlsError a call refuses with, for tests that then assert its code,
 * message and details: the test fails if the call succeeds or throws anything else.
 */
import assert from 'node:assert/strict';
import { isRaTlsError, type RaTlsError } from '../../src/errors.js';

/** The RaTlsError `run` throws. */
export function refusal(run: () => unknown): RaTlsError {
  try {
    run();
  } catch (error) {
    assert.ok(isRaTlsError(error), String(error));
    return error;
  }
  assert.fail('accepted');
}

/** The RaTlsError `promise` rejects with. */
export async function rejection(promise: Promise<unknown>): Promise<RaTlsError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isRaTlsError(error), String(error));
    return error;
  }
  assert.fail('accepted');
}
