import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { decode as decodeMsgpack, encode as encodeMsgpack } from '@msgpack/msgpack';
import { isRaTlsError } from '../src/errors.js';
import {
  decodeLegacyAttestation,
  decodeVersionedAttestation,
  parseLegacyEventLog,
} from '../src/evidence/versioned-attestation.js';
import {
  encodeLegacyEventLog,
  encodeVersionedAttestationV0,
  encodeVersionedAttestationV1,
  runtimeEventLogEntries,
} from '../src/testing/ra-tls-certificate.js';
import { toHex } from '../src/util/bytes.js';

const FIXTURE = new URL('./fixtures/dstack-attestation-v0/', import.meta.url);
const attestationBin = new Uint8Array(readFileSync(new URL('attestation.bin', FIXTURE)));
const quoteBin = new Uint8Array(readFileSync(new URL('quote.bin', FIXTURE)));

const EXPECTED_EVENTS: [string, string][] = [
  ['system-preparing', ''],
  ['app-id', '5bb4ff9a3837357f19dc176407a5709c62eb6c56'],
  ['compose-hash', 'c143116fef3940e7f776bfc0919c256232ae5338a6e948c96b711e0b2383483a'],
  ['instance-id', '1691ed1b47506cad7d08834668691d88246f5b1f'],
  ['boot-mr-done', ''],
  ['os-image-hash', 'e61be43dd1cc6a6f5edefd7c51b608983780839b0000ce60dd99737dcffe09b9'],
  ['key-provider', '<204 bytes of JSON>'],
  ['storage-fs', toHex(new TextEncoder().encode('zfs'))],
  ['system-ready', ''],
];

const rejectsWith = (code: string, pattern?: RegExp) => (error: unknown) =>
  isRaTlsError(error) &&
  error.code === code &&
  (pattern === undefined || pattern.test(error.message));

describe('decodeVersionedAttestation V0 on the real dstack sample', () => {
  const decoded = decodeVersionedAttestation(attestationBin);

  test('decodes the quote, the 33-entry event log and report_data exactly', () => {
    assert.equal(decoded.format, 'versioned-v0');
    assert.equal(decoded.platform, 'DstackTdx');
    assert.deepEqual(decoded.quote, quoteBin);
    assert.equal(decoded.eventLog.length, 33);
    assert.deepEqual(decoded.reportData, new Uint8Array(64));
    assert.doesNotThrow(() => JSON.parse(decoded.config ?? ''));
  });

  test('yields the 9 runtime events in order with their payloads', () => {
    const actual = decoded.runtimeEvents.map((event): [string, string] => [
      event.event,
      event.event === 'key-provider'
        ? `<${event.payload.byteLength} bytes of JSON>`
        : toHex(event.payload),
    ]);
    assert.deepEqual(actual, EXPECTED_EVENTS);
    const keyProvider = decoded.runtimeEvents[6]!;
    assert.doesNotThrow(() => JSON.parse(new TextDecoder().decode(keyProvider.payload)));
  });

  test('re-encoding the decoded sample yields the identical 9504 bytes', () => {
    const encoded = encodeVersionedAttestationV0(decoded);
    assert.equal(encoded.byteLength, 9504);
    assert.deepEqual(encoded, attestationBin);
  });
});

describe('decodeVersionedAttestation rejects what dstack rejects', () => {
  test('one trailing byte is refused', () => {
    const longer = new Uint8Array([...attestationBin, 0]);
    assert.throws(
      () => decodeVersionedAttestation(longer),
      rejectsWith('MALFORMED_ATTESTATION', /trailing/),
    );
  });

  test('inputs above 10 MiB are refused before decoding', () => {
    const huge = new Uint8Array(10 * 1024 * 1024 + 1);
    assert.throws(
      () => decodeVersionedAttestation(huge),
      rejectsWith('MALFORMED_ATTESTATION', /limit/),
    );
  });

  test('a non-TDX V0 platform is unsupported, an unknown one malformed', () => {
    const gcp = encodeVersionedAttestationV0({ platformVariant: 1, quote: quoteBin });
    assert.throws(
      () => decodeVersionedAttestation(gcp),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT', /DstackGcpTdx/),
    );
    const sev = encodeVersionedAttestationV0({ platformVariant: 3, quote: quoteBin });
    assert.throws(
      () => decodeVersionedAttestation(sev),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
    );
    const unknown = encodeVersionedAttestationV0({ platformVariant: 9, quote: quoteBin });
    assert.throws(() => decodeVersionedAttestation(unknown), rejectsWith('MALFORMED_ATTESTATION'));
  });

  test('an unknown version byte is unsupported (never "strip a byte and retry")', () => {
    for (const first of [0x01, 0x02, 0x7b, 0x90, 0xff]) {
      const bytes = new Uint8Array(attestationBin);
      bytes[0] = first;
      assert.throws(
        () => decodeVersionedAttestation(bytes),
        rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
      );
    }
    const prefixed = new Uint8Array([0x01, ...attestationBin]);
    assert.throws(
      () => decodeVersionedAttestation(prefixed),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
    );
  });

  test('invalid UTF-8 in an event name is refused', () => {
    const bytes = encodeVersionedAttestationV0({
      quote: quoteBin,
      runtimeEvents: [{ event: 'x', payload: new Uint8Array(0) }],
    });
    const at = bytes.indexOf(0x78, 2 + 2 + quoteBin.byteLength);
    bytes[at] = 0xff;
    assert.throws(
      () => decodeVersionedAttestation(bytes),
      rejectsWith('MALFORMED_ATTESTATION', /UTF-8/),
    );
  });
});

describe('decodeVersionedAttestation V1 (msgpack)', () => {
  const decodedV0 = decodeVersionedAttestation(attestationBin);
  const v1Input = {
    quote: quoteBin,
    eventLog: runtimeEventLogEntries(decodedV0.runtimeEvents),
    runtimeEvents: decodedV0.runtimeEvents,
    reportData: new Uint8Array(64).fill(7),
    config: '{"x":1}',
  };

  test('decodes dstack’s named layout with integer-array and bin byte fields', () => {
    const decoded = decodeVersionedAttestation(encodeVersionedAttestationV1(v1Input));
    assert.equal(decoded.format, 'versioned-v1');
    assert.equal(decoded.platform, 'DstackTdx');
    assert.deepEqual(decoded.quote, quoteBin);
    assert.deepEqual(decoded.reportData, new Uint8Array(64).fill(7));
    assert.equal(decoded.config, '{"x":1}');
    assert.deepEqual(
      decoded.runtimeEvents.map((event) => [event.event, toHex(event.payload)]),
      decodedV0.runtimeEvents.map((event) => [event.event, toHex(event.payload)]),
    );
    assert.equal(decoded.eventLog.length, 9);
    assert.equal(decoded.eventLog[0]?.imr, 3);
  });

  test('an envelope repeating a map key is refused, at the top and nested (the decoder would keep the last)', () => {
    const base = decodeMsgpack(encodeVersionedAttestationV1(v1Input)) as Record<string, unknown>;
    const concat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
    const mapOf = (entries: [string, unknown][]) =>
      concat(
        Uint8Array.of(0x80 | entries.length),
        ...entries.flatMap(([key, value]) => [encodeMsgpack(key), encodeMsgpack(value)]),
      );
    // Sanity: the hand-built map encoding decodes like the original when keys are unique.
    const unique = mapOf(Object.entries(base));
    assert.equal(decodeVersionedAttestation(unique).format, 'versioned-v1');

    const topLevel = mapOf([...Object.entries(base), ['version', 1]]);
    assert.throws(
      () => decodeVersionedAttestation(topLevel),
      rejectsWith('MALFORMED_ATTESTATION', /repeats the map key "version"/),
    );

    // Two quotes in platform.data: a forged one first, the real one last.
    const platform = base['platform'] as { kind: string; data: Record<string, unknown> };
    const data = mapOf([['quote', new Uint8Array(632)], ...Object.entries(platform.data)]);
    const platformMap = concat(
      Uint8Array.of(0x82),
      encodeMsgpack('kind'),
      encodeMsgpack(platform.kind),
      encodeMsgpack('data'),
      data,
    );
    const nested = concat(
      Uint8Array.of(0x83),
      encodeMsgpack('version'),
      encodeMsgpack(1),
      encodeMsgpack('platform'),
      platformMap,
      encodeMsgpack('stack'),
      encodeMsgpack(base['stack']),
    );
    assert.throws(
      () => decodeVersionedAttestation(nested),
      rejectsWith('MALFORMED_ATTESTATION', /repeats the map key "quote"/),
    );
  });

  test('other platforms and stacks are unsupported', () => {
    for (const platformKind of ['sev-snp', 'nitro-enclave', 'gcp-tdx']) {
      const bytes = encodeVersionedAttestationV1({ ...v1Input, platformKind });
      assert.throws(
        () => decodeVersionedAttestation(bytes),
        rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
      );
    }
    const pod = encodeVersionedAttestationV1({ ...v1Input, stackKind: 'dstack-pod' });
    assert.throws(
      () => decodeVersionedAttestation(pod),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
    );
  });

  test('a different version number, v2 runtime events, bad types and trailing bytes are refused', () => {
    const v2 = encodeMsgpack({ version: 2, platform: {}, stack: {} });
    assert.throws(
      () => decodeVersionedAttestation(v2),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT'),
    );
    const base = encodeVersionedAttestationV1(v1Input);
    const trailing = new Uint8Array([...base, 0xc0]);
    assert.throws(() => decodeVersionedAttestation(trailing), rejectsWith('MALFORMED_ATTESTATION'));
    const badQuote = encodeMsgpack({
      version: 1,
      platform: { kind: 'tdx', data: { quote: [1, 2, 300], event_log: [] } },
      stack: {
        kind: 'dstack',
        data: { report_data: new Uint8Array(64), runtime_events: [], config: '' },
      },
    });
    assert.throws(
      () => decodeVersionedAttestation(badQuote),
      rejectsWith('MALFORMED_ATTESTATION', /quote/),
    );
    const eventV2 = encodeMsgpack({
      version: 1,
      platform: { kind: 'tdx', data: { quote: new Uint8Array(8), event_log: [] } },
      stack: {
        kind: 'dstack',
        data: {
          report_data: new Uint8Array(64),
          runtime_events: [{ event: 'app-id', payload: new Uint8Array(20), version: 2 }],
          config: '',
        },
      },
    });
    assert.throws(
      () => decodeVersionedAttestation(eventV2),
      rejectsWith('UNSUPPORTED_ATTESTATION_FORMAT', /version 2/),
    );
    const shortReportData = encodeMsgpack({
      version: 1,
      platform: { kind: 'tdx', data: { quote: new Uint8Array(8), event_log: [] } },
      stack: {
        kind: 'dstack',
        data: { report_data: new Uint8Array(63), runtime_events: [], config: '' },
      },
    });
    assert.throws(
      () => decodeVersionedAttestation(shortReportData),
      rejectsWith('MALFORMED_ATTESTATION', /64/),
    );
  });
});

describe('legacy attestation (extensions 1.1 + 1.2)', () => {
  test('the JSON event log round-trips and its IMR 3 entries become the runtime events', () => {
    const events = decodeVersionedAttestation(attestationBin).runtimeEvents;
    const boot = {
      imr: 0,
      eventType: 1,
      digest: new Uint8Array(48).fill(1),
      event: '',
      eventPayload: new Uint8Array([9]),
    };
    const json = encodeLegacyEventLog([boot, ...runtimeEventLogEntries(events, false)]);
    const decoded = decodeLegacyAttestation(quoteBin, json);
    assert.equal(decoded.format, 'legacy');
    assert.equal(decoded.platform, 'DstackTdx', 'legacy certificates exist only on TDX');
    assert.equal(decoded.reportData, undefined);
    assert.equal(decoded.eventLog.length, 10);
    assert.deepEqual(decoded.eventLog[0], boot);
    assert.deepEqual(
      decoded.runtimeEvents.map((event) => event.event),
      EXPECTED_EVENTS.map(([name]) => name),
    );
  });

  test('an event log that is not the documented JSON is MALFORMED_EVENT_LOG', () => {
    for (const bad of [
      'not json',
      '{}',
      '[1]',
      '[{"imr":-1,"event_type":1,"digest":"","event":"","event_payload":""}]',
      '[{"imr":3,"event_type":1,"digest":"zz","event":"","event_payload":""}]',
      '[{"imr":3,"event_type":1,"event":"","event_payload":"abc"}]',
      '[{"imr":3,"event_type":1,"event":7,"event_payload":""}]',
      new Uint8Array([0x5b, 0xff, 0x5d]),
    ]) {
      assert.throws(
        () => parseLegacyEventLog(bad),
        rejectsWith('MALFORMED_EVENT_LOG'),
        String(bad),
      );
    }
  });
});

describe('a truncated V0 attestation names the field it ends in', () => {
  test('every cut lands on a named field; every field of the layout is named by some cut', () => {
    const whole = encodeVersionedAttestationV0({
      quote: new Uint8Array(8).fill(1),
      // Two of each: a count is checked against the bytes left, so only a later
      // element's first fields can be cut short.
      eventLog: [0, 1].map((imr) => ({
        imr,
        eventType: 1,
        digest: new Uint8Array(48),
        event: 'boot',
        eventPayload: new Uint8Array(2),
      })),
      runtimeEvents: [
        { event: 'app-id', payload: new Uint8Array(3) },
        { event: 'instance-id', payload: new Uint8Array(3) },
      ],
      config: '{}',
    });
    assert.equal(decodeVersionedAttestation(whole).platform, 'DstackTdx');
    const named = new Set<string>();
    for (let length = 1; length < whole.byteLength; length++) {
      assert.throws(
        () => decodeVersionedAttestation(whole.subarray(0, length)),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'MALFORMED_ATTESTATION'), String(error));
          const field = /^VersionedAttestation V0 is malformed: ([^:]+): /.exec(error.message)?.[1];
          assert.ok(field, `${length}: ${error.message}`);
          named.add(field);
          return true;
        },
      );
    }
    assert.deepEqual(
      [...named],
      [
        'platform variant',
        'quote',
        'event_log length',
        'event_log[0].digest',
        'event_log[0].event',
        'event_log[0].event_payload',
        'event_log[1].imr',
        'event_log[1].event_type',
        'event_log[1].digest',
        'event_log[1].event',
        'event_log[1].event_payload',
        'runtime_events length',
        'runtime_events[0].event',
        'runtime_events[0].payload',
        'runtime_events[1].event',
        'runtime_events[1].payload',
        'report_data',
        'config',
      ],
    );
  });
});

describe('a V1 field of the wrong type is named by its path', () => {
  test('each field, set to a value of another type, is refused naming that field', () => {
    const valid = () =>
      decodeMsgpack(
        encodeVersionedAttestationV1({
          quote: new Uint8Array(8).fill(1),
          eventLog: [
            {
              imr: 3,
              eventType: 1,
              digest: new Uint8Array(48),
              event: 'boot',
              eventPayload: new Uint8Array(2),
            },
          ],
          runtimeEvents: [{ event: 'app-id', payload: new Uint8Array(3) }],
          config: '{}',
        }),
      ) as Record<string, unknown>;
    assert.equal(decodeVersionedAttestation(encodeMsgpack(valid())).format, 'versioned-v1');
    // [path, what the refusal says it is not]
    const cases: [string, string][] = [
      ['platform', 'a map'],
      ['platform.kind', 'a string'],
      ['platform.data', 'a map'],
      ['stack', 'a map'],
      ['stack.kind', 'a string'],
      ['stack.data', 'a map'],
      ['platform.data.quote', 'bytes'],
      ['platform.data.event_log', 'an array'],
      ['platform.data.event_log[0]', 'a map'],
      ['platform.data.event_log[0].imr', 'a u32'],
      ['platform.data.event_log[0].event_type', 'a u32'],
      ['platform.data.event_log[0].digest', 'bytes'],
      ['platform.data.event_log[0].event', 'a string'],
      ['platform.data.event_log[0].event_payload', 'bytes'],
      ['stack.data.runtime_events', 'an array'],
      ['stack.data.runtime_events[0]', 'a map'],
      ['stack.data.runtime_events[0].event', 'a string'],
      ['stack.data.runtime_events[0].payload', 'bytes'],
      ['stack.data.report_data', 'bytes'],
      ['stack.data.config', 'a string'],
    ];
    for (const [name, kind] of cases) {
      const path = name
        .replace(/\[(\d+)\]/g, '.$1')
        .split('.')
        .map((key) => (/^\d+$/.test(key) ? Number(key) : key));
      const root = valid();
      let parent: Record<string | number, unknown> = root;
      for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
      parent[path.at(-1)!] = true;
      assert.throws(
        () => decodeVersionedAttestation(encodeMsgpack(root)),
        (error: unknown) => {
          assert.ok(isRaTlsError(error, 'MALFORMED_ATTESTATION'), `${name}: ${String(error)}`);
          assert.ok(
            error.message.includes(`V1 field ${name} is not ${kind}`),
            `${name}: ${error.message}`,
          );
          return true;
        },
      );
    }
    assert.throws(
      () => decodeVersionedAttestation(encodeMsgpack({ ...valid(), version: 2 })),
      (error: unknown) =>
        isRaTlsError(error, 'UNSUPPORTED_ATTESTATION_FORMAT') &&
        /declares version 2/.test(error.message),
    );
  });
});
