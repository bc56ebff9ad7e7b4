/**
 * RaTlsClient's refusals that need no server: options it cannot honour next
 * to a shared connector, pg's placeholder socket that must never dial in
 * plaintext, a report for another certificate, a cancel without a session,
 * and a second connect. Nothing here dials: the verifier throws if reached.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AttestedConnector } from '../src/connection/attested-connector.js';
import { RaTlsClient } from '../src/connection/ra-tls-client.js';
import { isRaTlsError } from '../src/errors.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import { refusal } from './support/refusals.js';

const DSN = `postgres://teesql_read:${'a3'.repeat(32)}@127.0.0.1:1/db`;
const verifier: RaTlsVerifier = {
  name: 'never-called',
  verify: () => Promise.reject(new Error('the verifier must not be reached')),
};
const identity = { clientCertOverride: { key: 'k', cert: 'c' } };

describe('RaTlsClient without a server', () => {
  test('options a shared connector owns are refused next to it, each named', () => {
    const connector = new AttestedConnector({ verifier, ...identity });
    try {
      const one = refusal(
        () => new RaTlsClient({ connectionString: DSN, connector, policy: { allowedMrtds: [] } }),
      );
      assert.equal(one.code, 'BAD_CONFIG');
      assert.equal(
        one.message,
        "policy cannot be combined with connector: the shared connector's own settings apply; set them when creating the connector (or drop connector)",
      );
      assert.deepEqual(one.details, { option: 'policy' });
      const two = refusal(
        () =>
          new RaTlsClient({
            connectionString: DSN,
            connector,
            verifier,
            reattestEvery: '5m',
          }),
      );
      assert.match(two.message, /^verifier, reattestEvery cannot be combined with connector/);
      assert.deepEqual(two.details, { option: 'verifier' });
      // An owned option given as undefined is not given.
      assert.ok(new RaTlsClient({ connectionString: DSN, connector, policy: undefined }));
    } finally {
      connector.close();
    }
  });

  test('no options object is BAD_CONFIG naming it', () => {
    for (const options of [undefined, null, 'postgres://x']) {
      const error = refusal(() => new RaTlsClient(options as never));
      assert.equal(error.message, 'RaTlsClient needs an options object');
      assert.deepEqual(error.details, { option: 'options' });
    }
  });

  test("pg's placeholder socket refuses to dial: only the attested socket may carry the session", () => {
    const client = new RaTlsClient({ connectionString: DSN, verifier, ...identity });
    const placeholder = (client as unknown as { connection: { stream: { connect: () => void } } })
      .connection.stream;
    const error = refusal(() => placeholder.connect());
    assert.equal(error.code, 'CONNECTION_ENDED');
    assert.equal(error.message, 'this connection has no attested socket');
  });

  test('a report for another certificate is not applied; the same certificate is', () => {
    const client = new RaTlsClient({ connectionString: DSN, verifier, ...identity });
    const report = (fingerprint: string) => ({ fingerprint }) as never;
    client.updateAttestation(report('aa'));
    client.updateAttestation(report('aa'));
    const error = refusal(() => client.updateAttestation(report('bb')));
    assert.equal(error.code, 'SERVER_CHANGED');
    assert.equal(
      error.message,
      'a report for another certificate cannot be applied to this connection',
    );
    assert.equal(client.attestation?.fingerprint, 'aa');
  });

  test('a cancel without a session, a second connect and a connect after end() are refused', async () => {
    const client = new RaTlsClient({ connectionString: DSN, verifier, ...identity });
    await assert.rejects(client.cancelActiveQuery(), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'CONNECTION_ENDED'));
      assert.equal(error.message, 'this client has no session whose query could be cancelled');
      return true;
    });
    await client.end();
    await assert.rejects(client.connect(), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
      assert.equal(error.message, 'this RaTlsClient has been ended: create a new client');
      return true;
    });
  });
});
