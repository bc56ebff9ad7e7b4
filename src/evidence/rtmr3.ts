import { RaTlsError } from '../errors.js';
import { bytesEqual, normalizeHex, sha384, toHex } from '../util/bytes.js';
import type { AppIdentity, RuntimeEvent } from './types.js';

/** Event type of dstack runtime events, hashed into every digest (docs/protocol.md §2). */
export const DSTACK_RUNTIME_EVENT_TYPE = 0x08000001;
const EVENT_TYPE_LE = new Uint8Array(4);
new DataView(EVENT_TYPE_LE.buffer).setUint32(0, DSTACK_RUNTIME_EVENT_TYPE, true);
const COLON = new Uint8Array([0x3a]);
const utf8 = new TextEncoder();

/**
 * dstack stops reading identity events at `system-ready`: events after it may
 * be emitted by the application itself, so they must not define the app.
 */
const LAST_BOOT_EVENT = 'system-ready';

/** The SHA-384 digest dstack extends into RTMR3 for one runtime event (docs/protocol.md §2). */
export function runtimeEventDigest(event: RuntimeEvent): Uint8Array {
  return sha384(EVENT_TYPE_LE, COLON, utf8.encode(event.event), COLON, event.payload);
}

/**
 * Replays runtime events the way TDX extends RTMR3: start from 48 zero bytes,
 * then `rtmr3 = SHA-384(rtmr3 ‖ digest)` for each event (docs/protocol.md §2).
 */
export function replayRtmr3(events: readonly RuntimeEvent[]): Uint8Array {
  let rtmr3: Uint8Array = new Uint8Array(48);
  for (const event of events) rtmr3 = sha384(rtmr3, runtimeEventDigest(event));
  return rtmr3;
}

/**
 * Checks that `events` replay to the quote's RTMR3 and only then reads the
 * application identity from them (first occurrence before `system-ready`, as
 * dstack does). Throws RTMR_MISMATCH when the replay differs: the events were
 * tampered with or belong to another TD.
 */
export function verifyAppIdentity(
  events: readonly RuntimeEvent[],
  quoteRtmr3Hex: string,
): AppIdentity {
  const replayed = replayRtmr3(events);
  const quoteHex = normalizeHex(quoteRtmr3Hex);
  const quoteRtmr3 = quoteHex === undefined ? undefined : Buffer.from(quoteHex, 'hex');
  if (quoteRtmr3 === undefined || !bytesEqual(replayed, quoteRtmr3)) {
    throw new RaTlsError(
      'RTMR_MISMATCH',
      `The ${events.length} runtime events replay to RTMR3 ${toHex(replayed)}, but the quote says ${quoteRtmr3Hex}: the event log was altered or belongs to another TD. Do not trust its app-id or compose-hash.`,
      { details: { replayed: toHex(replayed), quote: quoteRtmr3Hex } },
    );
  }
  const payloads = new Map<string, Uint8Array>();
  for (const event of events) {
    if (event.event === LAST_BOOT_EVENT) break;
    if (!payloads.has(event.event)) payloads.set(event.event, event.payload);
  }
  const hexOf = (name: string): string | undefined => {
    const payload = payloads.get(name);
    return payload === undefined || payload.byteLength === 0 ? undefined : toHex(payload);
  };
  const keyProvider = payloads.get('key-provider');
  const identity: AppIdentity = {
    appId: hexOf('app-id'),
    composeHash: hexOf('compose-hash'),
    instanceId: hexOf('instance-id'),
    osImageHash: hexOf('os-image-hash'),
    keyProvider:
      keyProvider === undefined || keyProvider.byteLength === 0
        ? undefined
        : new TextDecoder().decode(keyProvider),
    events: Object.freeze(events.map((event) => Object.freeze({ ...event }))),
  };
  return Object.freeze(identity);
}
