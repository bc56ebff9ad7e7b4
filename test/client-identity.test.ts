import assert from 'node:assert/strict';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { ClientIdentity, type IssuedClientCertificate } from '../src/identity/client-identity.js';
import { resolveDstackEndpoint } from '../src/identity/dstack-endpoint.js';
import { MAX_GUEST_AGENT_RESPONSE_BYTES } from '../src/identity/guest-agent-rpc.js';
import { createRaTlsCertificate } from '../src/testing/ra-tls-certificate.js';
import {
  type GuestAgent,
  startGuestAgent,
  type TlsKeyIssuer,
  type TlsKeyRequest,
} from '../src/testing/stack/guest-agent.js';

/** Issues self-signed client certificates valid for `lifetimeMs`, or fails on demand. */
class TestIssuer implements TlsKeyIssuer {
  lifetimeMs = 3650 * 86_400_000;
  failing = false;
  readonly requests: TlsKeyRequest[] = [];

  async issueTlsKey(request: TlsKeyRequest) {
    this.requests.push(request);
    // Slow enough that concurrent callers overlap the one agent call.
    await new Promise((resolve) => setTimeout(resolve, 30));
    if (this.failing) throw new Error('the KMS is unreachable');
    const certificate = createRaTlsCertificate({
      subject: `CN=${request.subject}`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + this.lifetimeMs),
    });
    return { key: certificate.privateKeyPem, certificateChain: [certificate.certificatePem] };
  }

  async getQuote(): Promise<never> {
    throw new Error('not used');
  }
}

describe('ClientIdentity against a real guest agent over HTTP', () => {
  const issuer = new TestIssuer();
  let agent: GuestAgent;

  before(async () => {
    agent = await startGuestAgent({ issuer });
  });
  after(() => agent.close());

  test('concurrent requests share one GetTlsKey call asking for RA-TLS client auth', async () => {
    const identity = new ClientIdentity({ dstackEndpoint: agent.endpoint });
    try {
      const results = await Promise.all(Array.from({ length: 5 }, () => identity.get()));
      assert.equal(identity.agentRequests, 1);
      assert.equal(issuer.requests.length, 1);
      assert.equal(issuer.requests[0]?.usageRaTls, true);
      assert.equal(issuer.requests[0]?.usageClientAuth, true);
      for (const result of results) assert.equal(result, results[0]);
      const leaf = new X509Certificate(results[0]!.cert);
      assert.ok(leaf.checkPrivateKey(createPrivateKey(results[0]!.key)));

      await identity.get();
      assert.equal(identity.agentRequests, 1, 'the certificate is cached');
    } finally {
      identity.close();
    }
  });

  test('the certificate asked for is short-lived: not_before/not_after around now, lifetime as configured', async () => {
    const identity = new ClientIdentity({ dstackEndpoint: agent.endpoint, lifetime: '2h' });
    try {
      const before = issuer.requests.length;
      const asked = Date.now() / 1000;
      await identity.get();
      const request = issuer.requests[before];
      assert.ok(request?.notBefore !== undefined && request.notAfter !== undefined);
      assert.ok(request.notBefore <= asked && request.notBefore >= asked - 600);
      assert.ok(Math.abs(request.notAfter - (asked + 7200)) < 60, 'not_after is now + 2h');
    } finally {
      identity.close();
    }
  });

  test('a lifetime under a minute is BAD_CONFIG', () => {
    assert.throws(
      () => new ClientIdentity({ dstackEndpoint: agent.endpoint, lifetime: '5s' }),
      (error: unknown) =>
        isRaTlsError(error, 'BAD_CONFIG') && /clientCertLifetime/.test(error.message),
    );
  });

  test('a certificate is replaced in the background before it expires', async () => {
    issuer.lifetimeMs = 2500;
    const identity = new ClientIdentity({ dstackEndpoint: agent.endpoint });
    try {
      const refreshes: IssuedClientCertificate[] = [];
      const second = new Promise<void>((resolve) => {
        identity.on('refresh', (certificate) => {
          refreshes.push(certificate);
          if (refreshes.length === 2) resolve();
        });
      });
      const first = await identity.get();
      await second;
      const [initial, replacement] = refreshes;
      assert.equal(initial?.cert, first.cert);
      assert.notEqual(replacement?.cert, initial?.cert);
      assert.ok(replacement!.obtainedAt < initial!.notAfter.getTime(), 'replaced before expiry');
      assert.equal((await identity.get()).cert, replacement?.cert);
    } finally {
      identity.close();
      issuer.lifetimeMs = 3650 * 86_400_000;
    }
  });

  test('a failing agent is CLIENT_CERT_UNAVAILABLE naming the endpoint, never a crash', async () => {
    issuer.failing = true;
    const identity = new ClientIdentity({ dstackEndpoint: agent.endpoint });
    try {
      await assert.rejects(
        identity.get(),
        (error: unknown) =>
          isRaTlsError(error, 'CLIENT_CERT_UNAVAILABLE') && error.message.includes(agent.endpoint),
      );
    } finally {
      identity.close();
      issuer.failing = false;
    }
  });

  test('a failing agent is asked again only after a jittered, growing pause', async () => {
    issuer.failing = true;
    let clock = Date.now();
    const identity = new ClientIdentity({ dstackEndpoint: agent.endpoint, now: () => clock });
    const tlsKeyCalls = () => agent.requests.filter((r) => r.method === 'GetTlsKey').length;
    const unavailable = (error: unknown) => isRaTlsError(error, 'CLIENT_CERT_UNAVAILABLE');
    try {
      const before = tlsKeyCalls();
      await assert.rejects(identity.get(), unavailable);
      assert.equal(tlsKeyCalls(), before + 1);

      // Callers during the pause get the failure at once; the agent is not asked.
      for (let i = 0; i < 20; i++) await assert.rejects(identity.get(), unavailable);
      assert.equal(tlsKeyCalls(), before + 1);

      // The first pause is under 500 ms; the second under 1 s but at least 500 ms.
      clock += 500;
      await assert.rejects(identity.get(), unavailable);
      assert.equal(tlsKeyCalls(), before + 2);
      clock += 499;
      await assert.rejects(identity.get(), unavailable);
      assert.equal(tlsKeyCalls(), before + 2);
      clock += 501;
      issuer.failing = false;
      await identity.get();
      assert.equal(tlsKeyCalls(), before + 3);
    } finally {
      identity.close();
      issuer.failing = false;
    }
  });

  test('an agent older than 0.5.7 (no Version RPC) still issues a certificate, with its default validity', async () => {
    const oldAgent = await startGuestAgent({ issuer, version: false });
    const identity = new ClientIdentity({ dstackEndpoint: oldAgent.endpoint });
    try {
      const before = issuer.requests.length;
      await identity.get();
      assert.equal(issuer.requests.length, before + 1);
      assert.equal(issuer.requests[before]?.notAfter, undefined);
    } finally {
      identity.close();
      await oldAgent.close();
    }
  });

  test('DSTACK_SIMULATOR_ENDPOINT is used when no endpoint is passed', async () => {
    const identity = new ClientIdentity({ env: { DSTACK_SIMULATOR_ENDPOINT: agent.endpoint } });
    try {
      assert.equal(identity.endpoint, agent.endpoint);
      const before = issuer.requests.length;
      await identity.get();
      assert.equal(issuer.requests.length, before + 1);
    } finally {
      identity.close();
    }
  });
});

describe('ClientIdentity endpoints', () => {
  test('a unix socket agent works like dstack.sock', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pg-ra-tls-identity-'));
    const socketPath = join(dir, 'dstack.sock');
    const issuer = new TestIssuer();
    const agent = await startGuestAgent({ issuer, socketPath });
    const identity = new ClientIdentity({ dstackEndpoint: socketPath });
    try {
      const certificate = await identity.get();
      assert.match(certificate.cert, /BEGIN CERTIFICATE/);
      assert.equal(issuer.requests.length, 1);
    } finally {
      identity.close();
      await agent.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('an unreachable agent is CLIENT_CERT_UNAVAILABLE', async () => {
    const agent = await startGuestAgent({ issuer: new TestIssuer() });
    const endpoint = agent.endpoint;
    await agent.close();
    const identity = new ClientIdentity({ dstackEndpoint: endpoint });
    try {
      await assert.rejects(identity.get(), (error: unknown) =>
        isRaTlsError(error, 'CLIENT_CERT_UNAVAILABLE'),
      );
    } finally {
      identity.close();
    }
  });

  test('no agent anywhere is MISSING_DSTACK_SOCKET at construction', () => {
    assert.throws(
      () => resolveDstackEndpoint(undefined, {}, () => false),
      (error: unknown) =>
        isRaTlsError(error, 'MISSING_DSTACK_SOCKET') &&
        /DSTACK_SIMULATOR_ENDPOINT/.test(error.message),
    );
    assert.equal(
      resolveDstackEndpoint(undefined, {}, (path) => path === '/run/dstack/dstack.sock'),
      '/run/dstack/dstack.sock',
    );
    assert.throws(
      () => new ClientIdentity({ dstackEndpoint: '/nonexistent/dstack.sock' }),
      (error: unknown) => isRaTlsError(error, 'MISSING_DSTACK_SOCKET'),
    );
  });

  test('an agent answering an endless body is cut off at the 1 MiB cap', async () => {
    let sent = 0;
    let hungUp!: () => void;
    const closed = new Promise<void>((resolve) => {
      hungUp = resolve;
    });
    const flood = createServer((request, response) => {
      request.resume();
      response.writeHead(200, { 'content-type': 'application/json' });
      response.on('close', hungUp);
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (!response.destroyed) {
          sent += chunk.byteLength;
          if (!response.write(chunk)) {
            response.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    await new Promise<void>((resolve) => flood.listen(0, '127.0.0.1', resolve));
    const { port } = flood.address() as AddressInfo;
    // A long timeout: only the cap can end the call promptly.
    const identity = new ClientIdentity({
      dstackEndpoint: `http://127.0.0.1:${port}`,
      requestTimeout: '120s',
    });
    try {
      await assert.rejects(
        identity.get(),
        (error: unknown) =>
          isRaTlsError(error, 'CLIENT_CERT_UNAVAILABLE') &&
          error.message.includes(`more than ${MAX_GUEST_AGENT_RESPONSE_BYTES} bytes`),
      );
      // The client hung up: the agent cannot make it read on.
      await closed;
      assert.ok(sent < MAX_GUEST_AGENT_RESPONSE_BYTES + 16 * 1024 * 1024, `sent ${sent} bytes`);
    } finally {
      identity.close();
      flood.closeAllConnections();
      await new Promise((resolve) => flood.close(resolve));
    }
  });

  test('clientCertOverride is returned as is, with no agent', async () => {
    const certificate = createRaTlsCertificate();
    const identity = new ClientIdentity({
      clientCertOverride: { key: certificate.privateKeyPem, cert: certificate.certificatePem },
      env: {},
    });
    assert.equal(identity.endpoint, undefined);
    assert.equal((await identity.get()).cert, certificate.certificatePem);
    assert.equal(identity.agentRequests, 0);
  });
});
