/**
 * RaTlsPool's own edges (src/pool/ra-tls-pool.ts), without Postgres: what the
 * constructor refuses and how it says so, where a multi-host pool dials when
 * nothing answers (bounded by `max`), and the cluster pool's reaction to a
 * connection handed back with an error. Real TLS dials on loopback, a real
 * DNS server on loopback; the verifier is never reached.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type ErrorCode, isRaTlsError } from '../src/errors.js';
import { type AttestationFailedEvent, createPool, RaTlsPool } from '../src/pool/ra-tls-pool.js';
import { type DnsServer, startDnsServer } from '../src/testing/cluster/dns-server.js';
import { createManifestSigner } from '../src/testing/cluster/manifest-signer.js';
import { createRaTlsCertificate } from '../src/testing/ra-tls-certificate.js';
import type { RaTlsVerifier } from '../src/verification/verifier.js';
import { hangLimit } from './support/hang-limit.js';

const SECRET = 'c4'.repeat(32);
const silent = () => {};
const verifier: RaTlsVerifier = {
  name: 'never-called',
  verify: () => Promise.reject(new Error('the verifier must not be reached')),
};
const client = createRaTlsCertificate({ subject: 'CN=pool edges client' });
/** A real client key and certificate: no guest agent is asked, every dial can present it. */
const clientCertOverride = { key: client.privateKeyPem, cert: client.certificatePem };
const base = {
  connectionString: `postgres://teesql_readwrite:${SECRET}@db.example.com:5433/app`,
  verifier,
  clientCertOverride,
  logger: silent,
};

function refused(code: ErrorCode, message: string | RegExp, details?: Record<string, unknown>) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error, code), `expected ${code}, got ${String(error)}`);
    if (typeof message === 'string') assert.equal(error.message, message);
    else assert.match(error.message, message);
    if (details !== undefined) assert.deepEqual(error.details, details);
    return true;
  };
}

describe('the constructor refuses what it cannot use, saying what to pass', () => {
  test(
    'no options object (null, undefined, a string, a number): BAD_CONFIG, not a TypeError',
    hangLimit,
    () => {
      for (const options of [null, undefined, 'postgres://db.example.com', 5]) {
        assert.throws(
          () => createPool(options as never),
          refused('BAD_CONFIG', 'RaTlsPool needs an options object', { option: 'options' }),
          String(options),
        );
      }
    },
  );

  test(
    'a Client: refused by name, whatever it is (every connection is an attested RaTlsClient)',
    hangLimit,
    () => {
      for (const Client of [class {}, null, RaTlsPool]) {
        assert.throws(
          () => createPool({ ...base, Client } as never),
          refused(
            'BAD_CONFIG',
            'Client must not be set: every connection of a RaTlsPool is an attested RaTlsClient',
            { option: 'Client' },
          ),
        );
      }
    },
  );

  test('a misspelled option names createPool and the option meant', hangLimit, () => {
    assert.throws(
      () => new RaTlsPool({ ...base, reattesEvery: '5m' } as never),
      refused(
        'BAD_CONFIG',
        'createPool has no option "reattesEvery": did you mean "reattestEvery"?',
      ),
    );
  });

  test(
    'cluster is an option of the pool: a mistake inside it is named, not the option itself',
    hangLimit,
    () => {
      const cluster = {
        domain: 'db.example.com',
        signer: `0x${'ab'.repeat(20)}`,
        refreshEvry: '1m',
      };
      assert.throws(
        () => createPool({ ...base, cluster } as never),
        refused('BAD_CONFIG', /cluster\.refreshEvry/, {
          option: 'cluster.refreshEvry',
          suggestion: 'cluster.refreshEvery',
        }),
      );
    },
  );
});

describe('pg-pool options', () => {
  test(
    'are passed on as given; the ones not given stay absent, so pg-pool’s defaults apply',
    hangLimit,
    async () => {
      const onConnect = () => {};
      const pool = createPool({ ...base, max: 3, connectionTimeoutMillis: 1234, onConnect });
      try {
        assert.equal(pool.options.max, 3);
        assert.equal(pool.options.connectionTimeoutMillis, 1234);
        assert.equal(pool.options.onConnect, onConnect);
        assert.equal(pool.options.idleTimeoutMillis, 10_000, 'pg-pool’s default');
        // No key holds undefined: code spreading pool.options over its own defaults keeps them.
        const undefinedKeys = Object.entries(pool.options).filter(
          ([, value]) => value === undefined,
        );
        assert.deepEqual(undefinedKeys, []);
      } finally {
        await pool.end();
      }
    },
  );
});

/** A TCP server that accepts and hangs up at once, counting connections: a host that is down. */
async function hangUpServer(): Promise<{ server: Server; port: number; accepted: () => number }> {
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    port: (server.address() as { port: number }).port,
    accepted: () => accepted,
  };
}

describe('a multi-host pool whose hosts all hang up', () => {
  let hosts: Awaited<ReturnType<typeof hangUpServer>>[];
  before(async () => {
    hosts = await Promise.all([hangUpServer(), hangUpServer(), hangUpServer()]);
  });
  after(async () => {
    await Promise.all(
      hosts.map(({ server }) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  });

  test(
    'one checkout dials max + 1 hosts, each failed host skipped for the next, then fails with the last one’s error',
    hangLimit,
    async () => {
      // Given three hosts that hang up during the handshake, and max: 1
      const list = hosts.map(({ port }) => `127.0.0.1:${port}`).join(',');
      const pool = createPool({
        ...base,
        connectionString: `postgres://teesql_readwrite:${SECRET}@${list}/app`,
        max: 1,
      });
      const failures: AttestationFailedEvent[] = [];
      pool.on('attestationFailed', (event) => failures.push(event));
      try {
        // When one connection is asked for
        await assert.rejects(
          pool.connect(),
          refused('HANDSHAKE_FAILED', new RegExp(`127\\.0\\.0\\.1:${hosts[1]!.port}`)),
        );
        // Then the first host was dialled, then the second (the first failed), and no third
        // attempt: a checkout makes at most max + 1 of them
        assert.deepEqual(
          hosts.map(({ accepted }) => accepted()),
          [1, 1, 0],
        );
        assert.deepEqual(
          failures.map(({ error, phase }) => [error.code, phase]),
          [['HANDSHAKE_FAILED', 'connect']],
        );
      } finally {
        await pool.end();
      }
    },
  );
});

describe('a cluster pool', () => {
  let dns: DnsServer;
  before(async () => {
    dns = await startDnsServer();
  });
  after(() => dns.close());

  test(
    'a connection handed back with an error makes the pool read the manifest again at once',
    hangLimit,
    async () => {
      // Given a cluster pool that would read its manifest only once an hour, and
      // a DNS server that has no manifest for it
      const pool = createPool({
        ...base,
        cluster: {
          domain: 'cluster.example',
          signer: createManifestSigner().address,
          resolver: [dns.address],
          refreshEvery: '1h',
        },
      });
      try {
        const failed = once(pool, 'discoveryFailed', { signal: AbortSignal.timeout(10_000) });
        assert.equal(dns.queries, 0, 'no lookup before a reason for one');
        // When pg-pool hands a connection back with an error, as it does after a
        // lost connection (emitted here as pg-pool emits it: error, client)
        pool.emit('release', new Error('Connection terminated unexpectedly'), undefined);
        // Then the manifest is looked up now, not in an hour
        const [event] = (await failed) as [{ error: unknown }];
        assert.ok(isRaTlsError(event.error), String(event.error));
        assert.equal(dns.queries, 1);
      } finally {
        await pool.end();
      }
    },
  );
});
