import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { inspectServer } from '../src/connection/inspect-server.js';
import { verifyServer } from '../src/connection/verify-server.js';
import { isRaTlsError } from '../src/errors.js';
import { type PoolStack, raTlsCredentials, startPoolStack } from './pool-harness.js';

let stack: PoolStack;
let originalCredentials: PoolStack['serverCredentials'];
before(async () => {
  stack = await startPoolStack();
  originalCredentials = stack.serverCredentials;
});
after(() => stack.close());
beforeEach(() => {
  stack.serverCredentials = originalCredentials;
});

const target = () => `127.0.0.1:${stack.sidecar.port}`;
const options = (allowedMrtds = [stack.mrtd]) => ({
  verifier: stack.verifier,
  dstackEndpoint: stack.agent.endpoint,
  policy: { allowedMrtds },
});

describe('inspectServer', () => {
  test('a genuine server: certificate, binding, report, timings; no byte to Postgres', async () => {
    const before = stack.sidecar.stats.connections.length;
    const inspection = await inspectServer(target(), options());
    assert.equal(inspection.error, undefined);
    assert.equal(inspection.binding, 'verified');
    assert.equal(inspection.policyRefused, false);
    assert.equal(inspection.report?.mrtd, stack.mrtd);
    assert.equal(inspection.certificate?.fingerprint, inspection.report?.fingerprint);
    assert.equal(inspection.certificate?.subject, 'CN=teesql sidecar');
    assert.ok(inspection.certificate?.attestationFormat !== undefined);
    assert.equal(typeof inspection.timings.dialMs, 'number');
    assert.equal(typeof inspection.timings.verifyMs, 'number');
    assert.deepEqual(inspection.endpoint, {
      host: '127.0.0.1',
      port: stack.sidecar.port,
      servername: undefined,
      connectTimeoutMs: 10_000,
      handshakeTimeoutMs: 10_000,
    });
    const dialed = stack.sidecar.stats.connections.slice(before);
    assert.equal(dialed.length, 1);
    assert.equal(dialed[0]?.bytesToUpstream, 0);
    // verifyServer is the same check, throwing instead.
    assert.deepEqual((await verifyServer(target(), options())).mrtd, stack.mrtd);
  });

  test('refused by the policy: the error, and what the server does attest', async () => {
    const inspection = await inspectServer(target(), options(['ab'.repeat(48)]));
    assert.ok(isRaTlsError(inspection.error, 'MRTD_NOT_ALLOWED'));
    assert.equal(inspection.policyRefused, true);
    assert.equal(inspection.binding, 'verified');
    assert.equal(inspection.report?.mrtd, stack.mrtd, 'verified without pins, for display');
    await assert.rejects(verifyServer(target(), options(['ab'.repeat(48)])), (error: unknown) =>
      isRaTlsError(error, 'MRTD_NOT_ALLOWED'),
    );
  });

  test('a quote that does not bind the TLS key: binding failed, PUBKEY_MISMATCH, no report', async () => {
    stack.serverCredentials = raTlsCredentials(stack.authority, {
      reportData: new Uint8Array(64).fill(7),
    });
    const inspection = await inspectServer(target(), options());
    assert.equal(inspection.binding, 'failed');
    assert.ok(isRaTlsError(inspection.error, 'PUBKEY_MISMATCH'));
    assert.equal(inspection.report, undefined);
    assert.equal(inspection.policyRefused, false);
  });

  test('nothing listening: a typed dial error and no certificate', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const inspection = await inspectServer(`127.0.0.1:${port}`, options());
    assert.ok(isRaTlsError(inspection.error, 'CONNECT_FAILED'));
    assert.equal(inspection.certificate, undefined);
    assert.equal(inspection.binding, 'not-checked');
  });

  test('a malformed target is BAD_CONFIG, thrown before any I/O', async () => {
    for (const bad of ['', 'host:0', 'host:70000', 'a b', 'host/path', '[::1']) {
      await assert.rejects(inspectServer(bad, options()), (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG'),
      );
    }
  });
});
