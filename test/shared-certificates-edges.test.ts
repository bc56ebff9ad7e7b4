/**
 * The memory bound of sharedCertificates (src/connection/shared-certificates.ts):
 * a certificate no connection holds any more leaves the process-wide map once
 * it is collected, and a newer copy of the same certificate is not dropped
 * with it. Uses V8's gc(), exposed for this file only.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  sharedCertificateCount,
  sharedCertificates,
} from '../src/connection/shared-certificates.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Shares a certificate nothing else holds (its copy is collectable at once). */
function shareAndDrop(fingerprint: string): void {
  sharedCertificates(fingerprint, Uint8Array.of(1, 2, 3), []);
}

/** Lets the current job end (WeakRef targets are kept alive until then), collects, and waits for `until`. */
async function collect(until: () => boolean): Promise<void> {
  for (let turn = 0; turn < 200 && !until(); turn++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
}

describe('sharedCertificates memory', () => {
  test('a certificate no one holds leaves the map once collected', async () => {
    const before = sharedCertificateCount();
    shareAndDrop('collected');
    assert.equal(sharedCertificateCount(), before + 1);
    await collect(() => sharedCertificateCount() === before);
    assert.equal(sharedCertificateCount(), before);
  });

  test('the finalizer of a collected copy keeps the newer copy shared in its place', async () => {
    const fingerprint = 'replaced';
    let first: WeakRef<Uint8Array> | undefined;
    (() => {
      first = new WeakRef(sharedCertificates(fingerprint, Uint8Array.of(4, 5), []).der);
      // Collected with the first copy, so finalized in the same cleanup: its leaving
      // the map says the first copy's finalizer has run.
      shareAndDrop('sentinel');
    })();
    // Collected, its finalizer not yet run: the next holder's bytes become the copy.
    let newer: Uint8Array | undefined;
    await collect(() => {
      if (first?.deref() !== undefined) return false;
      newer = sharedCertificates(fingerprint, Uint8Array.of(4, 5), []).der;
      return true;
    });
    assert.ok(newer !== undefined, 'the first copy was collected');
    const count = sharedCertificateCount();
    await collect(() => sharedCertificateCount() < count);
    assert.equal(sharedCertificateCount(), count - 1, 'only the sentinel left the map');
    assert.equal(sharedCertificates(fingerprint, Uint8Array.of(4, 5), []).der, newer);
  });
});
