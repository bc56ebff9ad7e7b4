/**
 * Edges of the PCCS client (docs/protocol.md §3) that the main collateral tests
 * do not reach: its options, what it leaves behind on a caller's signal, which
 * certificate names the root CA CRL, and what its failures say. The PCCS is the
 * local test server over real HTTP; where a reply must be odd, a fetch double
 * stands in for Intel PCS (the project's test root of trust, docs/protocol.md §8).
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { isRaTlsError } from '../src/errors.js';
import { startPccsServer } from '../src/testing/pccs-server.js';
import { type Collateral, normalizeCollateral } from '../src/verification/collateral.js';
import { PccsClient } from '../src/verification/pccs-client.js';
import { readPckInfo } from '../src/verification/pck-info.js';
import {
  type Answer,
  forwardingFetch,
  INTEL_PCS,
  ROOT_CRL_POINT,
} from './support/pccs-forwarding.js';

const FIXTURES = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURES)));
const collateral: Collateral = JSON.parse(
  readFileSync(new URL('collateral.json', FIXTURES), 'utf8'),
);
const pck = readPckInfo(quote);

const INTEL = INTEL_PCS;
const servers: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.close()));
});

async function pccsServing() {
  const server = await startPccsServer({ collateral });
  servers.push(server);
  return server;
}

/** A fetch forwarding `base` to a local PCCS server of its own (support/pccs-forwarding.ts). */
async function forwarding(base: string, answer?: Answer) {
  return forwardingFetch((await pccsServing()).url, base, answer);
}

/** The same reply with `header` set to `value` (or removed when undefined). */
async function withHeader(response: Response, header: string, value: string | undefined) {
  const headers = new Headers(response.headers);
  if (value === undefined) headers.delete(header);
  else headers.set(header, value);
  return new Response(await response.arrayBuffer(), { status: response.status, headers });
}

describe('PCCS client edges', () => {
  it('names requestTimeout when it is not a duration, and refuses one no Node timer can hold', () => {
    for (const requestTimeout of ['soon', -1, '30d']) {
      assert.throws(
        () => new PccsClient({ requestTimeout }),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'BAD_CONFIG'), String(error));
          assert.match(error.message, /^requestTimeout must be /);
          assert.deepEqual(error.details, { option: 'requestTimeout' });
          return true;
        },
        String(requestTimeout),
      );
    }
  });

  it('a long-lived caller signal keeps no listener once a fetch has ended, fetched or failed', async () => {
    const pccs = await pccsServing();
    const lifetime = new AbortController();
    const client = new PccsClient({ url: pccs.url });
    assert.deepEqual(
      await client.fetchCollateral(pck, lifetime.signal),
      normalizeCollateral(collateral),
    );
    assert.equal(getEventListeners(lifetime.signal, 'abort').length, 0, 'after a fetch');
    pccs.setDown(true);
    await assert.rejects(client.fetchCollateral(pck, lifetime.signal), /HTTP 503/);
    assert.equal(getEventListeners(lifetime.signal, 'abort').length, 0, 'after a failure');
  });

  it('a reply it cannot use names the PCCS, the FMSPC and what is missing', async () => {
    const double = await forwarding(INTEL, async (path, forwarded) =>
      path.startsWith('/tdx/certification/v4/qe/identity')
        ? withHeader(await forwarded(), 'SGX-Enclave-Identity-Issuer-Chain', undefined)
        : undefined,
    );
    await assert.rejects(
      new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(pck),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'), String(error));
        assert.equal(
          error.message,
          `The PCCS at ${INTEL} returned unusable collateral for FMSPC ${pck.fmspc.toUpperCase()}: ` +
            `${INTEL}/tdx/certification/v4/qe/identity?update=standard did not send the SGX-Enclave-Identity-Issuer-Chain header`,
        );
        assert.deepEqual(error.details, { pccsUrl: INTEL, fmspc: pck.fmspc.toUpperCase() });
        assert.ok(error.cause instanceof Error);
        return true;
      },
    );
  });

  it('takes the root CA CRL distribution point from the last certificate of the chain, however long', async () => {
    const double = await forwarding(INTEL, async (path, forwarded) => {
      if (!path.startsWith('/tdx/certification/v4/qe/identity')) return undefined;
      const response = await forwarded();
      // Only the root: its distribution point is the one to use.
      const chain = decodeURIComponent(
        response.headers.get('SGX-Enclave-Identity-Issuer-Chain') ?? '',
      );
      const root = chain.slice(chain.lastIndexOf('-----BEGIN CERTIFICATE-----'));
      return withHeader(response, 'SGX-Enclave-Identity-Issuer-Chain', encodeURIComponent(root));
    });
    const fetched = await new PccsClient({ url: INTEL, fetch: double.fetch }).fetchCollateral(pck);
    assert.equal(fetched.root_ca_crl, normalizeCollateral(collateral).root_ca_crl);
    assert.ok(double.requested.includes(ROOT_CRL_POINT), double.requested.join(' '));
  });

  it('Intel PCS named with its default port is still Intel PCS: no /rootcacrl request', async () => {
    const base = `${INTEL}:443`;
    const double = await forwarding(base);
    const fetched = await new PccsClient({ url: base, fetch: double.fetch }).fetchCollateral(pck);
    assert.deepEqual(fetched, normalizeCollateral(collateral));
    assert.ok(!double.requested.some((url) => url.endsWith('/rootcacrl')));
  });

  it('the GET sent once more after a reset keeps the request timeout', async () => {
    const pccs = await pccsServing();
    const retried: (AbortSignal | undefined)[] = [];
    let reset = false;
    const fetcher: typeof fetch = (input, init) => {
      if (!String(input).includes('/tcb?')) return fetch(input, init);
      if (!reset) {
        reset = true;
        return Promise.reject(new TypeError('fetch failed', { cause: { code: 'ECONNRESET' } }));
      }
      // The retry stalls: only its signal can end it.
      const signal = init?.signal ?? undefined;
      retried.push(signal);
      if (signal === undefined) return Promise.reject(new Error('sent without a signal'));
      return new Promise((_, reject) =>
        signal.addEventListener('abort', () => reject(signal.reason), { once: true }),
      );
    };
    await assert.rejects(
      new PccsClient({ url: pccs.url, fetch: fetcher, requestTimeout: 50 }).fetchCollateral(pck),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'), String(error));
        assert.match(error.message, /\/tcb\?fmspc=\w+ timed out after 50 ms/);
        assert.equal((error.details as { timedOut: boolean }).timedOut, true);
        return true;
      },
    );
    assert.equal(retried.length, 1);
  });

  it('a network failure names its cause (fetch says only "fetch failed")', async () => {
    const pccs = await startPccsServer({ collateral });
    await pccs.close();
    await assert.rejects(
      new PccsClient({ url: pccs.url }).fetchCollateral(pck),
      (error: unknown) => {
        assert.ok(isRaTlsError(error, 'COLLATERAL_UNAVAILABLE'), String(error));
        assert.match(
          error.message,
          /^PCCS request http:\/\/\S+ failed: fetch failed \(.*ECONNREFUSED.*\); check pccsUrl and network access, or pass collateral for offline use$/,
        );
        return true;
      },
    );
  });
});
