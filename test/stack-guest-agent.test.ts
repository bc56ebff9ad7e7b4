import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DstackClient } from '@phala/dstack-sdk';
import type { EventLogEntry } from '../src/evidence/types.js';
import {
  type GuestAgent,
  type GuestAgentInfo,
  startGuestAgent,
  type TlsKeyIssuer,
  type TlsKeyRequest,
} from '../src/testing/stack/guest-agent.js';
import {
  createPlainCertificate,
  type PlainCertificate,
} from '../src/testing/stack/plain-certificate.js';

const resourcesBefore = process.getActiveResourcesInfo();
const APP_ID = 'ab'.repeat(20);
const EVENT: EventLogEntry = {
  imr: 3,
  eventType: 0x08000001,
  digest: new Uint8Array(48).fill(7),
  event: 'app-id',
  eventPayload: Buffer.from(APP_ID, 'hex'),
};

/** A test issuer: plain P-256 certificates under a local CA, quote-shaped bytes. */
class PlainIssuer implements TlsKeyIssuer {
  readonly tlsKeyRequests: TlsKeyRequest[] = [];
  readonly reportData: Uint8Array[] = [];

  constructor(readonly ca: PlainCertificate) {}

  async issueTlsKey(tlsKeyRequest: TlsKeyRequest) {
    this.tlsKeyRequests.push(tlsKeyRequest);
    const leaf = await createPlainCertificate({
      commonName: tlsKeyRequest.subject,
      altNames: tlsKeyRequest.altNames,
      issuer: this.ca,
      serverAuth: tlsKeyRequest.usageServerAuth,
      clientAuth: tlsKeyRequest.usageClientAuth,
      ...(tlsKeyRequest.notBefore !== undefined && {
        notBefore: new Date(tlsKeyRequest.notBefore * 1000),
      }),
      ...(tlsKeyRequest.notAfter !== undefined && {
        notAfter: new Date(tlsKeyRequest.notAfter * 1000),
      }),
    });
    return { key: leaf.key, certificateChain: [leaf.cert, this.ca.cert] };
  }

  async getQuote(reportData: Uint8Array) {
    this.reportData.push(reportData);
    // Only the shape matters here: a v4 quote keeps report_data at bytes 568..632.
    const quote = new Uint8Array(632);
    quote.set(reportData, 568);
    return { quote, eventLog: [EVENT], vmConfig: '{"cpu_count":1}' };
  }

  info(): GuestAgentInfo {
    return {
      appId: APP_ID,
      instanceId: 'cd'.repeat(20),
      appName: 'teesql',
      composeHash: 'ef'.repeat(32),
      tcbInfo: { mrtd: '00'.repeat(48), rtmr3: '11'.repeat(48) },
    };
  }
}

let issuer: PlainIssuer;
let agent: GuestAgent;
let socketDir: string;

before(async () => {
  issuer = new PlainIssuer(await createPlainCertificate({ commonName: 'local CA', isCa: true }));
  socketDir = await mkdtemp(join(tmpdir(), 'pg-ra-tls-agent-'));
  agent = await startGuestAgent({
    issuer,
    info: { appName: 'überdb' },
    socketPath: join(socketDir, 'dstack.sock'),
  });
});

after(async () => {
  await agent.close();
  await rm(socketDir, { recursive: true, force: true });
});

/** Posts a raw body and returns status and parsed JSON, bypassing DstackClient's checks. */
function post(
  path: string,
  body: string,
  method = 'POST',
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(`${agent.endpoint}${path}`, { method, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        text += chunk;
      });
      res.on('end', () => {
        const json = res.headers['content-type'] === 'application/json' ? JSON.parse(text) : text;
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('DstackClient gets a client TLS key whose certificate follows the request', async () => {
  const client = new DstackClient(agent.endpoint);
  const result = await client.getTlsKey({
    subject: 'teesql-client',
    altNames: ['client.local'],
    usageRaTls: true,
    usageServerAuth: false,
    usageClientAuth: true,
  });
  assert.match(result.key, /^-----BEGIN PRIVATE KEY-----/);
  assert.equal(result.certificate_chain.length, 2);
  const leaf = new X509Certificate(result.certificate_chain[0]!);
  const ca = new X509Certificate(result.certificate_chain[1]!);
  assert.equal(leaf.subject, 'CN=teesql-client');
  assert.equal(leaf.subjectAltName, 'DNS:client.local');
  assert.ok(leaf.verify(ca.publicKey), 'the leaf is signed by the local CA');
  assert.deepEqual(issuer.tlsKeyRequests.at(-1), {
    subject: 'teesql-client',
    altNames: ['client.local'],
    usageRaTls: true,
    usageServerAuth: false,
    usageClientAuth: true,
  });
  assert.deepEqual(agent.requests.at(-1), {
    method: 'GetTlsKey',
    body: {
      subject: 'teesql-client',
      usage_ra_tls: true,
      usage_server_auth: false,
      usage_client_auth: true,
      alt_names: ['client.local'],
    },
    status: 200,
  });
});

test('validity options reach the issuer after DstackClient checks Version', async () => {
  const notBefore = 1_700_000_000;
  const notAfter = notBefore + 3600;
  const client = new DstackClient(agent.endpoint);
  const result = await client.getTlsKey({ subject: 'short', notBefore, notAfter });
  const leaf = new X509Certificate(result.certificate_chain[0]!);
  assert.equal(new Date(leaf.validFrom).getTime(), notBefore * 1000);
  assert.equal(new Date(leaf.validTo).getTime(), notAfter * 1000);
  assert.deepEqual(
    agent.requests.slice(-2).map((entry) => entry.method),
    ['Version', 'GetTlsKey'],
  );
});

test('an agent without Version makes DstackClient refuse validity options', async () => {
  const old = await startGuestAgent({ issuer, version: false });
  try {
    const client = new DstackClient(old.endpoint);
    await assert.rejects(client.getTlsKey({ notAfter: 1_900_000_000 }), /not supported/);
    assert.deepEqual(old.requests, [{ method: 'Version', body: {}, status: 404 }]);
  } finally {
    await old.close();
  }
});

test('Info, Version and GetQuote answer in the shapes DstackClient parses', async () => {
  const client = new DstackClient(agent.endpoint);
  const info = await client.info();
  assert.equal(info.app_id, APP_ID);
  assert.equal(info.app_name, 'überdb', 'options.info overrides the issuer');
  assert.deepEqual(info.tcb_info, { mrtd: '00'.repeat(48), rtmr3: '11'.repeat(48) });

  assert.deepEqual(
    { ...(await client.version()) },
    {
      version: '0.5.8',
      rev: 'pg-ra-tls-test',
      __name__: 'VersionResponse',
    },
  );

  const quote = await client.getQuote(new Uint8Array(32).fill(0xaa));
  const expectedReportData = `${'aa'.repeat(32)}${'00'.repeat(32)}`;
  assert.equal(
    quote.report_data,
    expectedReportData,
    'short report_data is zero-padded to 64 bytes',
  );
  assert.equal(quote.quote.slice(568 * 2), expectedReportData);
  assert.deepEqual(JSON.parse(quote.event_log), [
    {
      imr: 3,
      event_type: 0x08000001,
      digest: '07'.repeat(48),
      event: 'app-id',
      event_payload: APP_ID,
    },
  ]);
  assert.equal(quote.vm_config, '{"cpu_count":1}');
});

test('DstackClient finds the agent through DSTACK_SIMULATOR_ENDPOINT', async (t) => {
  const previous = process.env.DSTACK_SIMULATOR_ENDPOINT;
  t.after(() => {
    if (previous === undefined) delete process.env.DSTACK_SIMULATOR_ENDPOINT;
    else process.env.DSTACK_SIMULATOR_ENDPOINT = previous;
  });
  t.mock.method(console, 'warn', () => {});
  process.env.DSTACK_SIMULATOR_ENDPOINT = agent.endpoint;
  const info = await new DstackClient().info();
  assert.equal(info.instance_id, 'cd'.repeat(20));
});

test('DstackClient talks to the agent over its unix socket', async () => {
  assert.ok(agent.socketPath);
  const client = new DstackClient(agent.socketPath);
  const key = await client.getTlsKey({ subject: 'over-unix', usageClientAuth: true });
  assert.equal(new X509Certificate(key.certificate_chain[0]!).subject, 'CN=over-unix');
  const info = await client.info();
  assert.equal(info.app_name, 'überdb', 'non-ASCII survives the SDK counting characters');
});

test('malformed requests get a JSON error and the agent keeps serving', async () => {
  const cases: Array<[string, string, number, RegExp]> = [
    ['/GetTlsKey', '{not json', 400, /not valid JSON/],
    ['/GetTlsKey', '[1,2]', 400, /JSON object/],
    ['/GetTlsKey', '{"usage_ra_tls":"yes"}', 400, /usage_ra_tls must be a boolean/],
    ['/GetTlsKey', '{"alt_names":[1]}', 400, /alt_names/],
    ['/GetTlsKey', '{"not_before":-5}', 400, /not_before/],
    ['/GetQuote', `{"report_data":"${'00'.repeat(65)}"}`, 400, /at most 64 bytes/],
    ['/GetQuote', '{"report_data":"xyz"}', 400, /hex/],
  ];
  for (const [path, body, status, message] of cases) {
    const answer = await post(path, body);
    assert.equal(answer.status, status, `${path} ${body}`);
    assert.match((answer.json as { error: string }).error, message);
  }
  assert.equal((await post('/Info', '', 'GET')).status, 405);
  assert.equal((await post('/Nope', '{}')).status, 404);
  assert.equal((await post('/Info', '')).status, 200);
});

test('close releases the port, the socket file and every handle', async () => {
  await agent.close();
  await assert.rejects(post('/Info', '{}'), { code: 'ECONNREFUSED' });
  assert.throws(() => new DstackClient(agent.socketPath), /does not exist/);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(process.getActiveResourcesInfo(), resourcesBefore);
});
