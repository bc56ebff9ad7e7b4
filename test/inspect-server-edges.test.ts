/**
 * Which client certificate inspectServer/verifyServer present
 * (src/connection/inspect-server.ts createConnector): the process's shared
 * one by default, a given override or identity instead, none when told so,
 * and then no guest agent is needed at all. Real sidecar and guest agent.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { inspectServer } from '../src/connection/inspect-server.js';
import { isRaTlsError } from '../src/errors.js';
import { type PoolStack, raTlsCredentials, startPoolStack } from './pool-harness.js';

let stack: PoolStack;
before(async () => {
  stack = await startPoolStack();
});
after(() => stack.close());

const missingAgent = '/nonexistent/pg-ra-tls-test/dstack.sock';
const target = () => `127.0.0.1:${stack.sidecar.port}`;
const attestation = () => ({
  verifier: stack.verifier,
  policy: { allowedMrtds: [stack.mrtd] },
  logger: () => {},
});

describe('inspectServer client certificate', () => {
  test('checks present the process’s shared certificate: the guest agent is asked at most once', async () => {
    const asked = stack.issuer.requests.length;
    for (let i = 0; i < 2; i++) {
      const inspection = await inspectServer(target(), {
        ...attestation(),
        dstackEndpoint: stack.agent.endpoint,
      });
      assert.equal(inspection.error, undefined);
    }
    assert.ok(stack.issuer.requests.length - asked <= 1, 'one certificate for both checks');
  });

  test('with a clientCertOverride no guest agent is looked for', async () => {
    const override = raTlsCredentials(stack.authority);
    const inspection = await inspectServer(target(), {
      ...attestation(),
      clientCertOverride: override,
      dstackEndpoint: missingAgent,
    });
    assert.equal(inspection.error, undefined);
  });

  test('presentClientCertificate: false (and a signal) are options, and need no guest agent', async () => {
    const inspection = await inspectServer(target(), {
      ...attestation(),
      presentClientCertificate: false,
      dstackEndpoint: missingAgent,
      signal: new AbortController().signal,
    });
    assert.notEqual(inspection.error?.code, 'BAD_CONFIG');
    assert.equal(inspection.certificate?.fingerprint.length, 64, 'the server certificate was read');
  });
});

describe('inspectServer target strings', () => {
  test('a libpq keyword string may space its "=": it is read as one', async () => {
    const inspection = await inspectServer(`host = 127.0.0.1  port = ${stack.sidecar.port}`, {
      ...attestation(),
      dstackEndpoint: stack.agent.endpoint,
    });
    assert.equal(inspection.endpoint.host, '127.0.0.1');
    assert.equal(inspection.endpoint.port, stack.sidecar.port);
    assert.equal(inspection.error, undefined);
  });

  test('only a string that starts as a URL or keyword list is read as one; others are a bad target', async () => {
    for (const bad of ['db.example postgres://u:hunter2@h/db', 'db.example port=5433']) {
      await assert.rejects(inspectServer(bad, attestation()), (error: unknown) => {
        assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
        assert.match(error.message, /^verifyServer target \(a string, not shown\) is not/);
        assert.deepEqual(error.details, { option: 'target' });
        return true;
      });
    }
  });
});
