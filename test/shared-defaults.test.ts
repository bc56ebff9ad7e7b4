import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  closeSharedDefaults,
  sharedClientIdentity,
  sharedVerifier,
} from '../src/connection/shared-defaults.js';

describe('process-wide defaults', () => {
  test('are shared until closed, then created afresh', () => {
    const env = {};
    const verifier = sharedVerifier();
    const identity = sharedClientIdentity('http://127.0.0.1:1', env);
    assert.equal(sharedVerifier(), verifier);
    assert.equal(sharedClientIdentity('http://127.0.0.1:1', env), identity);
    assert.notEqual(sharedClientIdentity('http://127.0.0.1:2', env), identity, 'one per endpoint');

    closeSharedDefaults();
    assert.notEqual(sharedVerifier(), verifier);
    const again = sharedClientIdentity('http://127.0.0.1:1', env);
    assert.notEqual(again, identity);
    // A closed identity refuses to issue: it was really closed, not just forgotten.
    return assert.rejects(identity.get()).finally(() => closeSharedDefaults());
  });
});
