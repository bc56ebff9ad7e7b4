import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { isRaTlsError, RaTlsError } from '../src/errors.js';
import { startPccsServer } from '../src/testing/pccs-server.js';
import type { Collateral } from '../src/verification/collateral.js';
import { DcapVerifier } from '../src/verification/dcap-verifier.js';

const FIXTURE = new URL('./fixtures/intel-tdx-v4/', import.meta.url);
const NOW = new Date(1751328000 * 1000);
const quote = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));
const collateral: Collateral = JSON.parse(
  readFileSync(new URL('collateral.json', FIXTURE), 'utf8'),
);

// What a pool's end() aborts its verifications with (ra-tls-pool.ts).
const poolEnded = () => new RaTlsError('POOL_ENDED', 'the pool was ended during attestation');

const servers: { close(): Promise<void> }[] = [];
after(async () => {
  await Promise.all(servers.map((server) => server.close()));
});

describe('DcapVerifier: an aborted verification says why it was aborted', () => {
  it("keeps a RaTlsError reason (a pool's end()) while the engines run", async () => {
    const verifier = new DcapVerifier({ collateral });
    const controller = new AbortController();

    const pending = verifier.verify(quote, { now: NOW, signal: controller.signal });
    controller.abort(poolEnded());

    await assert.rejects(pending, (error: unknown) => isRaTlsError(error, 'POOL_ENDED'));
    verifier.close();
  });

  it('keeps a RaTlsError reason while waiting for collateral from a stalled PCCS', async () => {
    const pccs = await startPccsServer({ collateral });
    servers.push(pccs);
    pccs.setStalled(true);
    const verifier = new DcapVerifier({ pccsUrl: pccs.url, requestTimeout: '60s' });
    const controller = new AbortController();

    const pending = verifier.verify(quote, { now: NOW, signal: controller.signal });
    await pccs.receivedRequests(3);
    controller.abort(poolEnded());

    await assert.rejects(pending, (error: unknown) => isRaTlsError(error, 'POOL_ENDED'));
    verifier.close();
  });

  it('is VERIFY_TIMEOUT for a bare abort, and for a signal aborted before the call', async () => {
    const verifier = new DcapVerifier({ collateral });
    const during = new AbortController();
    const pending = verifier.verify(quote, { now: NOW, signal: during.signal });
    during.abort();
    await assert.rejects(pending, (error: unknown) => {
      assert.ok(isRaTlsError(error, 'VERIFY_TIMEOUT'));
      assert.equal(
        error.message,
        'Attestation verification was aborted (verifyTimeout or caller signal)',
      );
      // The abort's own reason stays reachable for whoever debugs it.
      assert.equal(error.cause, during.signal.reason);
      return true;
    });

    await assert.rejects(
      verifier.verify(quote, { now: NOW, signal: AbortSignal.abort(poolEnded()) }),
      (error: unknown) => isRaTlsError(error, 'POOL_ENDED'),
    );
    verifier.close();
  });

  it('still verifies when the signal never aborts', async () => {
    const verifier = new DcapVerifier({ collateral });
    const result = await verifier.verify(quote, {
      now: NOW,
      signal: new AbortController().signal,
    });
    assert.equal(result.tcbStatus, 'UpToDate');
    verifier.close();
  });
});
