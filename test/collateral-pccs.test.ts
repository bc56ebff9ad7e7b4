import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { getCollateral, QuoteVerifier } from '@phala/dcap-qvl';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import {
  certificatePem,
  encodeCertificate,
  encodeName,
} from '../src/testing/authority/certificate.js';
import { deriveP256Key } from '../src/testing/authority/keys.js';
import { createTestAuthority } from '../src/testing/authority/test-authority.js';
import { startPccsServer } from '../src/testing/pccs-server.js';
import { collateralWindow, normalizeCollateral } from '../src/verification/collateral.js';
import { CollateralCache, type CollateralSource } from '../src/verification/collateral-cache.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';
import { MAX_PCCS_RESPONSE_BYTES, PccsClient } from '../src/verification/pccs-client.js';
import { readPckInfo } from '../src/verification/pck-info.js';
import { fixture, V4_NOW } from './support/dcap-fixtures.js';
import {
  type Answer,
  forwardingFetch,
  INTEL_PCS,
  ROOT_CRL_POINT,
} from './support/pccs-forwarding.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function unavailable(pattern: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'), String(error));
    assert.match(error.message, pattern);
    return true;
  };
}

const servers: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.close()));
});

async function pccsServing(collateral: Parameters<typeof startPccsServer>[0]['collateral']) {
  const server = await startPccsServer({ collateral });
  servers.push(server);
  return server;
}

describe('PCCS client against the local PCCS server (real fixture collateral)', () => {
  it('fetches collateral identical to the fixture, signed JSON text byte for byte', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);

    const fetched = await new PccsClient({ url: pccs.url }).fetchCollateral(readPckInfo(quote));

    assert.deepEqual(fetched, normalizeCollateral(collateral));
    assert.deepEqual(pccs.requests, { tcb: 1, qeIdentity: 1, pckCrl: 1, rootCaCrl: 1, other: 0 });
  });

  it("speaks the PCCS v4 API as @phala/dcap-qvl's own getCollateral expects", async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);

    const fetched: Record<string, unknown> = { ...(await getCollateral(pccs.url, quote)) };
    delete fetched['pck_certificate_chain'];

    const report = QuoteVerifier.newProd().verify(
      Buffer.from(quote),
      fetched as unknown as Parameters<QuoteVerifier['verify']>[1],
      V4_NOW.getTime() / 1000,
    );
    assert.equal(report.status, 'UpToDate');
  });

  it('fetches once per FMSPC while the collateral is valid and younger than collateralMaxAge', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url });

    const first = await verifier.verify(quote, { now: V4_NOW });
    const second = await verifier.verify(quote, { now: new Date(V4_NOW.getTime() + DAY - 1) });

    assert.equal(first.tcbStatus, 'UpToDate');
    assert.equal(second.tcbStatus, 'UpToDate');
    assert.equal(pccs.requests.tcb, 1);
    assert.equal(pccs.requests.pckCrl, 1);
    // The verdict says how long it may be reused: until the collateral is a day old.
    assert.equal(first.validUntil, V4_NOW.getTime() + DAY);
  });

  it('refetches collateral once it is collateralMaxAge old (24 h by default), long before nextUpdate', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url });

    await verifier.verify(quote, { now: V4_NOW });
    await verifier.verify(quote, { now: new Date(V4_NOW.getTime() + DAY) });
    assert.equal(pccs.requests.tcb, 2);

    const hourly = new DcapVerifier({ pccsUrl: pccs.url, collateralMaxAge: '1h' });
    await hourly.verify(quote, { now: V4_NOW });
    const result = await hourly.verify(quote, { now: new Date(V4_NOW.getTime() + HOUR) });
    assert.equal(pccs.requests.tcb, 4);
    assert.equal(result.validUntil, V4_NOW.getTime() + 2 * HOUR);
  });

  it('refuses a collateralMaxAge that would delay revocations past a day, or refetch per call', () => {
    for (const collateralMaxAge of ['25h', '30d', '1s', 'soon']) {
      assert.throws(
        () => new DcapVerifier({ pccsUrl: 'http://127.0.0.1:9', collateralMaxAge }),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') && /collateralMaxAge/.test(error.message),
        collateralMaxAge,
      );
    }
    // Both ends of [1 minute, 24 hours] are allowed; one millisecond past either is not.
    for (const collateralMaxAge of [60_000, '1m', 86_400_000, '24h']) {
      new DcapVerifier({ pccsUrl: 'http://127.0.0.1:9', collateralMaxAge });
    }
    for (const collateralMaxAge of [59_999, 86_400_001]) {
      assert.throws(
        () => new DcapVerifier({ pccsUrl: 'http://127.0.0.1:9', collateralMaxAge }),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'BAD_CONFIG'));
          assert.match(error.message, /between 1 minute and 24 hours/);
          assert.deepEqual(error.details, { option: 'collateralMaxAge' });
          return true;
        },
      );
    }
  });

  it('coalesces concurrent fetches for one FMSPC into one', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url });

    const results = await Promise.all(
      Array.from({ length: 8 }, () => verifier.verify(quote, { now: V4_NOW })),
    );

    assert.equal(results.length, 8);
    assert.deepEqual(pccs.requests, { tcb: 1, qeIdentity: 1, pckCrl: 1, rootCaCrl: 1, other: 0 });
  });

  it('times out a stalled PCCS with COLLATERAL_UNAVAILABLE', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setStalled(true);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: '200ms' });

    await assert.rejects(
      verifier.verify(quote, { now: V4_NOW }),
      unavailable(/timed out after 200 ms/),
    );
  });

  it("stops waiting for collateral when the caller's signal aborts", async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setStalled(true);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: '5s' });
    const controller = new AbortController();

    const pending = verifier.verify(quote, { now: V4_NOW, signal: controller.signal });
    controller.abort();

    await assert.rejects(pending, (error: unknown) => isRaTlsError(error, 'VERIFY_TIMEOUT'));
  });

  it('stops reading an endless PCCS body at the 1 MiB cap with COLLATERAL_UNAVAILABLE', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setFlooding(true);
    // A long timeout: only the cap can end these requests promptly.
    const client = new PccsClient({ url: pccs.url, requestTimeout: '120s' });

    await assert.rejects(
      client.fetchCollateral(readPckInfo(quote)),
      unavailable(new RegExp(`answered more than ${MAX_PCCS_RESPONSE_BYTES} bytes`)),
    );
    // Three requests run in parallel; each was cut at the cap (plus what the
    // socket buffers held), not read on to gigabytes.
    assert.ok(
      pccs.floodedBytes < 3 * (MAX_PCCS_RESPONSE_BYTES + 16 * 1024 * 1024),
      `the PCCS got to send ${pccs.floodedBytes} bytes`,
    );
  });

  it('a verification that gives up detaches the stalled fetch: once the PCCS recovers, the next one fetches afresh', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setStalled(true);
    // Far longer than any test: only detaching the stalled fetch lets the third caller through.
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: '170s' });
    const gaveUp = new AbortController();
    const patient = new AbortController();

    const first = verifier.verify(quote, { now: V4_NOW, signal: gaveUp.signal });
    const second = verifier.verify(quote, { now: V4_NOW, signal: patient.signal });
    await pccs.receivedRequests(3); // PCK CRL, TCB info and QE identity: all held
    gaveUp.abort();
    await assert.rejects(first, (error: unknown) => isRaTlsError(error, 'VERIFY_TIMEOUT'));

    pccs.setStalled(false);
    const third = await verifier.verify(quote, { now: V4_NOW });
    assert.equal(third.tcbStatus, 'UpToDate');
    assert.equal(pccs.requests.tcb, 2);

    // The patient caller still waits on the stalled fetch until its own deadline.
    patient.abort();
    await assert.rejects(second, (error: unknown) => isRaTlsError(error, 'VERIFY_TIMEOUT'));
  });

  it('sends a GET once more when a kept-alive connection was reset, and only then', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const failing = (code: string) => {
      const calls: string[] = [];
      let failed = false;
      const fetcher: typeof fetch = (input, init) => {
        calls.push(String(input));
        if (!failed && String(input).includes('/tcb?')) {
          failed = true;
          return Promise.reject(new TypeError('fetch failed', { cause: { code } }));
        }
        return fetch(input, init);
      };
      return { calls, fetcher };
    };
    for (const code of ['ECONNRESET', 'UND_ERR_SOCKET']) {
      const { calls, fetcher } = failing(code);
      const client = new PccsClient({ url: pccs.url, fetch: fetcher });
      assert.deepEqual(
        await client.fetchCollateral(readPckInfo(quote)),
        normalizeCollateral(collateral),
        code,
      );
      assert.equal(calls.filter((url) => url.includes('/tcb?')).length, 2, code);
    }
    const { calls, fetcher } = failing('ECONNREFUSED');
    const client = new PccsClient({ url: pccs.url, fetch: fetcher });
    await assert.rejects(client.fetchCollateral(readPckInfo(quote)), (error: unknown) => {
      unavailable(/\/tcb\?fmspc=.* failed: fetch failed/)(error);
      const { url, timedOut } = (error as { details: { url: string; timedOut: boolean } }).details;
      assert.match(url, /\/tdx\/certification\/v4\/tcb\?fmspc=/);
      assert.equal(timedOut, false);
      return true;
    });
    assert.equal(calls.filter((url) => url.includes('/tcb?')).length, 1, 'no retry');
  });

  it('DcapVerifier hands its fetch and requestTimeout to its PCCS client', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const fetched: string[] = [];
    const verifier = new DcapVerifier({
      pccsUrl: pccs.url,
      fetch: (input, init) => {
        fetched.push(String(input));
        return fetch(input, init);
      },
    });
    assert.equal((await verifier.verify(quote, { now: V4_NOW })).tcbStatus, 'UpToDate');
    assert.ok(
      fetched.some((url) => url.includes('/tcb?fmspc=')),
      'the given fetch was used',
    );

    pccs.setStalled(true);
    const impatient = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: 100 });
    await assert.rejects(
      impatient.verify(quote, { now: V4_NOW }),
      unavailable(/timed out after 100 ms/),
    );
    pccs.setStalled(false);
  });

  it('an HTTP error names the request and its status', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setDown(true);
    await assert.rejects(
      new PccsClient({ url: pccs.url }).fetchCollateral(readPckInfo(quote)),
      (error: unknown) => {
        unavailable(/failed with HTTP 503; check pccsUrl or try again later$/)(error);
        const details = (error as { details: { url: string; status: number } }).details;
        assert.equal(details.status, 503);
        assert.ok(details.url.startsWith(`${pccs.url}/`), details.url);
        return true;
      },
    );
  });

  it('a caller’s signal aborted before the fetch: nothing is fetched, the fetch is abandoned', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const gone = new AbortController();
    gone.abort();
    const client = new PccsClient({ url: pccs.url });
    await assert.rejects(
      client.fetchCollateral(readPckInfo(quote), gone.signal),
      (error: unknown) => {
        unavailable(/was abandoned: nobody waits for it any more/)(error);
        assert.deepEqual((error as { details: unknown }).details, {
          pccsUrl: pccs.url,
          fmspc: readPckInfo(quote).fmspc.toUpperCase(),
        });
        return true;
      },
    );
    assert.deepEqual(pccs.requests, { tcb: 0, qeIdentity: 0, pckCrl: 0, rootCaCrl: 0, other: 0 });
  });

  it('close() aborts a collateral fetch stalled in flight: the verification fails at once', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setStalled(true);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: '170s' });

    const pending = verifier.verify(quote, { now: V4_NOW });
    await pccs.receivedRequests(3);
    verifier.close();

    await assert.rejects(pending, unavailable(/abandoned/));
  });

  it('backs off a failing PCCS: one request batch per jittered, doubling pause, then recovers', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const client = new PccsClient({ url: pccs.url });
    let clock = 0;
    let batches = 0;
    const source: CollateralSource = (pck, signal) => {
      batches++;
      return client.fetchCollateral(pck, signal);
    };
    const cache = new CollateralCache(source, {
      clock: () => clock,
      backoffInitialMs: 1000,
      backoffMaxMs: 4000,
    });
    const pck = readPckInfo(quote);
    pccs.setDown(true);

    await assert.rejects(cache.get(pck, V4_NOW.getTime()), unavailable(/HTTP 503/));
    for (let i = 0; i < 50; i++) {
      await assert.rejects(
        cache.get(pck, V4_NOW.getTime()),
        unavailable(/not retried for another \d+ ms/),
      );
    }
    assert.equal(batches, 1, 'fifty callers in the pause made no request');

    clock += 1000; // past the first pause (0.5–1 s)
    await assert.rejects(cache.get(pck, V4_NOW.getTime()), unavailable(/HTTP 503/));
    assert.equal(batches, 2);
    clock += 999; // the second pause is 1–2 s
    await assert.rejects(cache.get(pck, V4_NOW.getTime()), unavailable(/not retried/));
    assert.equal(batches, 2);
    for (let failures = 3; failures <= 6; failures++) {
      clock += 4000; // bounded: never longer than backoffMaxMs
      await assert.rejects(cache.get(pck, V4_NOW.getTime()), unavailable(/HTTP 503/));
      assert.equal(batches, failures);
    }

    pccs.setDown(false);
    clock += 4000;
    const entry = await cache.get(pck, V4_NOW.getTime());
    assert.equal(entry.window.nextUpdate, Date.parse('2025-07-19T10:00:35Z'));
    assert.equal(batches, 7);
  });

  it('sends a GET once more when the PCCS closed the connection without answering (stale keep-alive)', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    let dropped = 0;
    const flaky = createServer((request, response) => {
      if (dropped === 0) {
        dropped++;
        request.socket.destroy();
        return;
      }
      fetch(`${pccs.url}${request.url}`).then(async (upstream) => {
        response.writeHead(upstream.status, Object.fromEntries(upstream.headers));
        response.end(Buffer.from(await upstream.arrayBuffer()));
      });
    });
    await new Promise<void>((resolve) => flaky.listen(0, '127.0.0.1', resolve));
    servers.push({
      close: () => {
        flaky.closeAllConnections();
        return new Promise<void>((resolve) => flaky.close(() => resolve()));
      },
    });
    const { port } = flaky.address() as AddressInfo;

    const fetched = await new PccsClient({ url: `http://127.0.0.1:${port}` }).fetchCollateral(
      readPckInfo(quote),
    );

    assert.equal(dropped, 1);
    assert.deepEqual(fetched, normalizeCollateral(collateral));
  });

  it('fails with COLLATERAL_UNAVAILABLE when the PCCS is down and nothing is cached', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    pccs.setDown(true);

    await assert.rejects(
      new DcapVerifier({ pccsUrl: pccs.url }).verify(quote, { now: V4_NOW }),
      unavailable(/HTTP 503/),
    );
  });

  it('keeps verifying from the cache while the PCCS is down', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url });
    await verifier.verify(quote, { now: V4_NOW });

    pccs.setDown(true);
    const result = await verifier.verify(quote, { now: V4_NOW });

    assert.equal(result.tcbStatus, 'UpToDate');
  });

  it('fails with COLLATERAL_UNAVAILABLE when nothing listens at pccsUrl', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await startPccsServer({ collateral });
    await pccs.close();

    await assert.rejects(
      new DcapVerifier({ pccsUrl: pccs.url }).verify(quote, { now: V4_NOW }),
      unavailable(/failed/),
    );
  });

  it('rejects a non-http pccsUrl as BAD_CONFIG', () => {
    assert.throws(
      () => new DcapVerifier({ pccsUrl: 'ftp://example.com' }),
      (error: unknown) => isRaTlsError(error, 'BAD_CONFIG'),
    );
  });
});

describe('collateral cache with a test root of trust and an injected clock', () => {
  it('refetches after the earliest nextUpdate and verifies with the new collateral', async () => {
    const authority = await createTestAuthority({ seed: 'collateral-refetch' });
    const t0 = new Date('2030-01-01T00:00:00Z');
    let served = authority.collateral({ issueDate: t0, nextUpdate: new Date(t0.getTime() + DAY) });
    const pccs = await pccsServing(() => served);
    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      pccsUrl: pccs.url,
      logger: () => {},
    });
    const quote = authority.issueQuote();

    await verifier.verify(quote, { now: new Date(t0.getTime() + HOUR) });
    await verifier.verify(quote, { now: new Date(t0.getTime() + 23 * HOUR) });
    assert.equal(pccs.requests.tcb, 1);

    served = authority.collateral({
      issueDate: new Date(t0.getTime() + DAY - HOUR),
      nextUpdate: new Date(t0.getTime() + 31 * DAY),
    });
    const later = await verifier.verify(quote, { now: new Date(t0.getTime() + DAY + HOUR) });

    assert.equal(pccs.requests.tcb, 2);
    // Valid for 31 days, but used (and vouched for) only a day after its fetch.
    assert.equal(later.validUntil, t0.getTime() + 2 * DAY + HOUR);
  });

  it('reports a PCCS serving stale collateral as COLLATERAL_EXPIRED', async () => {
    const authority = await createTestAuthority({ seed: 'collateral-stale' });
    const t0 = new Date('2030-01-01T00:00:00Z');
    const pccs = await pccsServing(
      authority.collateral({ issueDate: t0, nextUpdate: new Date(t0.getTime() + DAY) }),
    );
    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      pccsUrl: pccs.url,
      logger: () => {},
    });

    await assert.rejects(
      verifier.verify(authority.issueQuote(), { now: new Date(t0.getTime() + 2 * DAY) }),
      (error: unknown) => isRaTlsError(error, 'COLLATERAL_EXPIRED'),
    );
  });

  it('keeps one entry per FMSPC', async () => {
    const a = await createTestAuthority({ seed: 'collateral-fmspc', fmspc: '00a06f000000' });
    const b = await createTestAuthority({ seed: 'collateral-fmspc', fmspc: '00b06f000000' });
    const byFmspc = new Map([
      [a.fmspc.toUpperCase(), a.collateral()],
      [b.fmspc.toUpperCase(), b.collateral()],
    ]);
    const pccs = await pccsServing((fmspc) =>
      fmspc === undefined ? a.collateral() : byFmspc.get(fmspc),
    );
    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: a.rootCaDer,
      pccsUrl: pccs.url,
      logger: () => {},
    });

    for (let i = 0; i < 2; i++) {
      await verifier.verify(a.issueQuote());
      await verifier.verify(b.issueQuote());
    }

    assert.equal(pccs.requests.tcb, 2);
  });

  it('does not cache a failed fetch (it is retried once the backoff pause is over)', async () => {
    const { quote, collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    const client = new PccsClient({ url: pccs.url });
    let clock = 0;
    const cache = new CollateralCache((pck, signal) => client.fetchCollateral(pck, signal), {
      clock: () => clock,
    });
    const pck = readPckInfo(quote);

    pccs.setDown(true);
    await assert.rejects(cache.get(pck, V4_NOW.getTime()), unavailable(/503/));
    pccs.setDown(false);
    clock += 500;
    const entry = await cache.get(pck, V4_NOW.getTime());

    assert.equal(entry.window.nextUpdate, Date.parse('2025-07-19T10:00:35Z'));
  });
});

describe('PCCS client: Intel PCS, CRL encodings and answers it cannot use', () => {
  const INTEL = INTEL_PCS;

  /** A fetch forwarding `base` to a local PCCS server of its own (support/pccs-forwarding.ts). */
  async function forwarding(base: string, answer?: Answer) {
    const { collateral } = fixture('intel-tdx-v4');
    const pccs = await pccsServing(collateral);
    return { ...forwardingFetch(pccs.url, base, answer), collateral };
  }
  const pck = () => readPckInfo(fixture('intel-tdx-v4').quote);
  const unavailable = (message: RegExp) => (error: unknown) => {
    assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'), String(error));
    assert.match(error.message, message);
    return true;
  };
  const withBody = (response: Response, body: string) =>
    new Response(body, { status: response.status, headers: response.headers });

  it('from Intel PCS the root CA CRL comes from the root certificate’s distribution point', async () => {
    const double = await forwarding(INTEL);
    const client = new PccsClient({ url: `${INTEL}/tdx/certification/v4/`, fetch: double.fetch });
    assert.equal(client.url, INTEL);

    assert.deepEqual(await client.fetchCollateral(pck()), normalizeCollateral(double.collateral));
    assert.ok(double.requested.includes(ROOT_CRL_POINT), double.requested.join(' '));
    assert.ok(!double.requested.some((url) => url.endsWith('/rootcacrl')));
  });

  it('a PCCS without /rootcacrl (404) falls back to the distribution point', async () => {
    const base = 'https://pccs.example';
    const double = await forwarding(base, (path, forwarded) =>
      path === '/sgx/certification/v4/rootcacrl' && !double.requested.includes(ROOT_CRL_POINT)
        ? Promise.resolve(new Response('not here', { status: 404 }))
        : forwarded(),
    );
    const client = new PccsClient({ url: base, fetch: double.fetch });
    assert.deepEqual(await client.fetchCollateral(pck()), normalizeCollateral(double.collateral));
    assert.deepEqual(
      double.requested.filter((url) => /rootcacrl|IntelSGXRootCA/.test(url)),
      [`${base}/sgx/certification/v4/rootcacrl`, ROOT_CRL_POINT],
    );
  });

  it('a root CA CRL nobody serves, from a root that names no https distribution point, is unavailable', async () => {
    const key = deriveP256Key(new TextEncoder().encode('pccs-no-crl-point'), 'root');
    const name = encodeName([['CN', 'Root without an https CRL point']]);
    const root = encodeCertificate(
      {
        serialNumber: Uint8Array.of(1),
        issuer: name,
        subject: name,
        notBefore: new Date('2020-01-01T00:00:00Z'),
        notAfter: new Date('2040-01-01T00:00:00Z'),
        publicKey: key.publicKey,
        subjectKeyId: key.keyId,
        authorityKeyId: key.keyId,
        ca: true,
        crlUrl: 'http://crl.example/root.crl',
      },
      key.privateKey,
    );
    const base = 'https://pccs.example';
    const double = await forwarding(base, async (path, forwarded) => {
      if (path === '/sgx/certification/v4/rootcacrl') return new Response('', { status: 404 });
      if (!path.startsWith('/tdx/certification/v4/qe/identity')) return undefined;
      const response = await forwarded();
      const headers = new Headers(response.headers);
      headers.set('SGX-Enclave-Identity-Issuer-Chain', encodeURIComponent(certificatePem(root)));
      return new Response(await response.arrayBuffer(), { status: 200, headers });
    });
    await assert.rejects(
      new PccsClient({ url: base, fetch: double.fetch }).fetchCollateral(pck()),
      (error: unknown) => {
        unavailable(
          /^The PCCS at https:\/\/pccs\.example serves no root CA CRL and the root certificate names no CRL distribution point$/,
        )(error);
        assert.deepEqual((error as { details?: unknown }).details, { pccsUrl: base });
        return true;
      },
    );
    assert.ok(!double.requested.some((url) => url.startsWith('http://crl.example')));
  });

  it('reads a CRL sent as DER, PEM or hex text, and refuses anything else', async () => {
    const { collateral } = fixture('intel-tdx-v4');
    const der = Buffer.from(collateral.pck_crl as string, 'hex');
    const pem = `-----BEGIN X509 CRL-----\n${der.toString('base64')}\n-----END X509 CRL-----\n`;
    for (const body of [pem, ` ${der.toString('hex').toUpperCase()}\n`]) {
      const double = await forwarding(INTEL, async (path, forwarded) =>
        path.startsWith('/sgx/certification/v4/pckcrl')
          ? withBody(await forwarded(), body)
          : undefined,
      );
      const fetched = await new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(
        pck(),
      );
      assert.equal(fetched.pck_crl, der.toString('hex'));
    }
    for (const body of ['', 'not a crl', 'abc']) {
      const double = await forwarding(INTEL, async (path, forwarded) =>
        path.startsWith('/sgx/certification/v4/pckcrl')
          ? withBody(await forwarded(), body)
          : undefined,
      );
      await assert.rejects(
        new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(pck()),
        unavailable(
          /^The PCCS at https:\/\/api\.trustedservices\.intel\.com returned unusable collateral for FMSPC B0C06F000000: .*pckcrl.* did not return a CRL \(DER, PEM or hex\)/,
        ),
      );
    }
  });

  it('takes the TCB info issuer chain under its older header name too', async () => {
    const double = await forwarding(INTEL, async (path, forwarded) => {
      if (!path.startsWith('/tdx/certification/v4/tcb')) return undefined;
      const response = await forwarded();
      const headers = new Headers(response.headers);
      headers.set('SGX-TCB-Info-Issuer-Chain', headers.get('TCB-Info-Issuer-Chain') ?? '');
      headers.delete('TCB-Info-Issuer-Chain');
      return new Response(await response.arrayBuffer(), { status: 200, headers });
    });
    const fetched = await new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(
      pck(),
    );
    assert.equal(fetched.tcb_info_issuer_chain, double.collateral.tcb_info_issuer_chain);
  });

  it('takes the exact text of the signed member wherever it stands in the body', async () => {
    const { collateral } = fixture('intel-tdx-v4');
    const tcbInfo = collateral.tcb_info;
    const bodies = [
      // Signature first, spaces around the colon, a nested "tcbInfo" key in an earlier member,
      // and strings holding braces, brackets, commas and escaped quotes.
      `{ "signature" : "${collateral.tcb_info_signature}", "note": {"tcbInfo": [1, "}\\"],{"]}, "tcbInfo" : ${tcbInfo} }`,
      `{"tcbInfo":${tcbInfo},"signature":"${collateral.tcb_info_signature}"}`,
      // A top-level string value that reads like the key is a value, not a key.
      `{"note":"tcbInfo","tcbInfo":${tcbInfo},"signature":"${collateral.tcb_info_signature}"}`,
    ];
    for (const body of bodies) {
      const double = await forwarding(INTEL, async (path, forwarded) =>
        path.startsWith('/tdx/certification/v4/tcb')
          ? withBody(await forwarded(), body)
          : undefined,
      );
      const fetched = await new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(
        pck(),
      );
      assert.equal(fetched.tcb_info, tcbInfo);
    }
    for (const body of [
      `{"tcbInfo":${tcbInfo}}`,
      `{"tcbInfo":"text","signature":"00"}`,
      `{"tcbinfo":${tcbInfo},"signature":"00"}`,
    ]) {
      const double = await forwarding(INTEL, async (path, forwarded) =>
        path.startsWith('/tdx/certification/v4/tcb')
          ? withBody(await forwarded(), body)
          : undefined,
      );
      await assert.rejects(
        new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(pck()),
        unavailable(/did not return \{"tcbInfo": \.\.\., "signature": \.\.\.\}/),
      );
    }
  });

  it('refuses a PCCS URL that is not http(s)', () => {
    for (const url of ['not a url', 'ftp://pccs.example', 'file:///etc/passwd']) {
      assert.throws(
        () => new PccsClient({ url }),
        (error: unknown) =>
          isRaTlsError(error, 'BAD_CONFIG') &&
          error.message === `pccsUrl must be an http(s) URL, got ${JSON.stringify(url)}` &&
          (error.details as { option?: string }).option === 'pccsUrl',
      );
    }
    assert.equal(
      new PccsClient({ url: 'http://pccs.example//sgx/certification/v4' }).url,
      'http://pccs.example/',
    );
    // Every trailing slash goes, then the API suffix, only at the end.
    assert.equal(
      new PccsClient({ url: 'https://pccs.example/tdx/certification/v4///' }).url,
      'https://pccs.example',
    );
    assert.equal(
      new PccsClient({ url: 'https://pccs.example/sgx/certification/v4/mirror/' }).url,
      'https://pccs.example/sgx/certification/v4/mirror',
    );
  });
});

describe('CollateralCache on the real fixture collateral (a source in process)', () => {
  const { quote, collateral } = fixture('intel-tdx-v4');
  const normalized = normalizeCollateral(collateral);
  const window = collateralWindow(normalized);
  const pck = readPckInfo(quote);
  const counting = () => {
    const calls: AbortSignal[] = [];
    const source: CollateralSource = async (_pck, signal) => {
      calls.push(signal);
      return normalized;
    };
    return { calls, source };
  };

  it('serves the cached set from exactly its notBefore, and fetches for a time before it', async () => {
    const { calls, source } = counting();
    const cache = new CollateralCache(source);
    await cache.get(pck, window.notBefore);
    await cache.get(pck, window.notBefore);
    assert.equal(calls.length, 1, 'notBefore itself is inside the window');
    await cache.get(pck, window.notBefore - 1);
    assert.equal(calls.length, 2, 'a time before the window is not served from it');
  });

  it('refetches after collateralMaxAge, without calling it a back-off', async () => {
    const { calls, source } = counting();
    const cache = new CollateralCache(source, { maxAgeMs: 60_000 });
    const first = await cache.get(pck, window.notBefore);
    assert.equal(first.usableUntil, window.notBefore + 60_000);
    await cache.get(pck, window.notBefore + 60_000);
    assert.equal(calls.length, 2);
  });

  it('a fetch everyone gave up on is aborted, counts as no failure, and is not joined', async () => {
    const started: AbortSignal[] = [];
    let stall = true;
    const source: CollateralSource = (_pck, signal) => {
      started.push(signal);
      if (!stall) return Promise.resolve(normalized);
      return new Promise((_, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason)),
      );
    };
    const cache = new CollateralCache(source);
    const impatient = new AbortController();
    const waiting = cache.get(pck, window.notBefore, impatient.signal);
    impatient.abort(new RaTlsError('VERIFY_TIMEOUT', 'gave up'));
    await assert.rejects(waiting, (error: unknown) => isRaTlsError(error, 'VERIFY_TIMEOUT'));
    assert.equal(started[0]?.aborted, true, 'the abandoned fetch was aborted');
    stall = false;
    // Not backed off (an abandoned fetch says nothing about the PCCS), not joined.
    assert.equal((await cache.get(pck, window.notBefore)).collateral, normalized);
    assert.equal(started.length, 2);
  });

  it('while backed off, says how long and after how many failures, keeping the last error', async () => {
    let clock = 0;
    const refusal = new RaTlsError('COLLATERAL_UNAVAILABLE', 'PCCS said no', {
      details: { url: 'http://pccs.invalid' },
    });
    let failure: unknown = refusal;
    const cache = new CollateralCache(() => Promise.reject(failure), {
      clock: () => clock,
      backoffInitialMs: 1000,
      backoffMaxMs: 1000,
    });
    await assert.rejects(cache.get(pck, window.notBefore), (error: unknown) => error === refusal);
    await assert.rejects(cache.get(pck, window.notBefore), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'));
      assert.match(
        error.message,
        /^PCCS said no \(not retried for another \d+ ms after 1 consecutive failure\(s\)\)$/,
      );
      const details = error.details as { url: string; retryInMs: number };
      assert.equal(details.url, 'http://pccs.invalid');
      assert.ok(details.retryInMs > 0 && details.retryInMs <= 1000);
      assert.equal(error.cause, refusal);
      return true;
    });
    failure = new Error('socket hang up');
    clock += 1000;
    await assert.rejects(cache.get(pck, window.notBefore), (error: unknown) => error === failure);
    await assert.rejects(cache.get(pck, window.notBefore), (error: unknown) => {
      assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'));
      assert.match(
        error.message,
        /^Collateral could not be fetched: socket hang up \(not retried for another \d+ ms after 2 consecutive failure\(s\)\)$/,
      );
      assert.deepEqual(Object.keys(error.details ?? {}), ['retryInMs']);
      assert.equal(error.cause, failure);
      return true;
    });
  });
});
