/**
 * A dstack guest agent's key and quote issuing (docs/protocol.md §1, §2, §4), made
 * by a DCAP test root of trust: GetTlsKey (RA-TLS certificates chained to an
 * app CA and a KMS root), GetQuote and Info, for an app whose identity the
 * test chooses. Every way a server certificate can be bad is one option away
 * (see {@link DstackIssuerFaults}). For tests and demos only.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { encode as encodeMsgpack } from '@msgpack/msgpack';
import { RaTlsError } from '../errors.js';
import { expectedReportData } from '../evidence/binding.js';
import { RA_TLS_OIDS } from '../evidence/certificate.js';
import { replayRtmr3 } from '../evidence/rtmr3.js';
import type { RuntimeEvent } from '../evidence/types.js';
import { fromHex, sha256, toHex } from '../util/bytes.js';
import { certificatePem, encodeName, type NameAttribute } from './authority/certificate.js';
import { deriveBytes, deriveP256Key, type P256KeyPair } from './authority/keys.js';
import type { BytesLike, IssueQuoteOptions, TestAuthority } from './authority/test-authority.js';
import { encodeDstackCertificate } from './dstack-certificate.js';
import {
  encodeLegacyEventLog,
  encodeVersionedAttestationV0,
  runtimeEventLogEntries,
  withReportData,
} from './ra-tls-certificate.js';

/**
 * The identity of the simulated CVM. Byte values are hex (`0x` tolerated) or
 * bytes; every field has a fixed, recognisable default.
 */
export interface DstackIdentity {
  /** 48 bytes. Default: the authority's default MRTD. */
  readonly mrtd?: BytesLike;
  /** 48 bytes each. Default: the authority's defaults. */
  readonly rtmr0?: BytesLike;
  readonly rtmr1?: BytesLike;
  readonly rtmr2?: BytesLike;
  /** 20 bytes. */
  readonly appId?: BytesLike;
  /** 32 bytes. Default: SHA-256 of the default app-compose (as dstack computes it). */
  readonly composeHash?: BytesLike;
  /** 20 bytes. */
  readonly instanceId?: BytesLike;
  /** 32 bytes. */
  readonly osImageHash?: BytesLike;
  /** JSON text of the key-provider event. Default `{"name":"kms","id":<KMS root SPKI hex>}` (`local-sgx` for chain 'local'). */
  readonly keyProvider?: string;
  /** Payload of the storage-fs event. Default `zfs`. */
  readonly storageFs?: string;
  /** Set the TD debug bit. Default false. */
  readonly debug?: boolean;
  /** 48 bytes. Default all zero, as dstack requires. */
  readonly mrSignerSeam?: BytesLike;
  /** 32 bytes, reported by Info and app info. */
  readonly deviceId?: BytesLike;
  /** app_name of Info. Default `pg-ra-tls-test`. */
  readonly appName?: string;
}

/** Ways to make issued evidence bad on purpose; each maps to one rejection code. */
export interface DstackIssuerFaults {
  /**
   * DER SubjectPublicKeyInfo the quote's report_data binds instead of the
   * leaf's key: a quote replayed in another key's certificate (PUBKEY_MISMATCH).
   */
  readonly bindTo?: Uint8Array;
  /**
   * The certificate (and GetQuote's event log) carries runtime events other
   * than those extended into the quote's RTMR3: compose-hash altered (RTMR_MISMATCH).
   */
  readonly tamperEvents?: boolean;
  /**
   * The quote is signed over other report_data, then patched to bind the
   * leaf's key: binding holds but the quote signature does not (QUOTE_INVALID).
   */
  readonly tamperQuote?: boolean;
  /** Passed to `authority.issueQuote` last, e.g. `{ tdAttributes }` or `{ teeTcbSvn }`. */
  readonly quote?: Omit<IssueQuoteOptions, 'reportData'>;
}

/** Options of {@link createDstackIssuer}. */
export interface DstackIssuerOptions {
  /** The DCAP test root of trust that signs the quotes. */
  readonly authority: TestAuthority;
  readonly identity?: DstackIdentity;
  /** Write extensions 1.1 (quote) + 1.2 (JSON event log) like dstack ≤ 0.5.8 instead of 1.8 V0. */
  readonly legacy?: boolean;
  /** `kms` (default): chain [leaf, app CA, KMS root]; `local`: [leaf, local CA] (docs/protocol.md §1). */
  readonly chain?: 'kms' | 'local';
  /** Applied to every certificate and quote; a request's own faults win. */
  readonly faults?: DstackIssuerFaults;
  /**
   * Seed of the KMS root / local CA keys. Default: a fixed seed, so the defaults
   * never change. Another seed is another KMS (what `policy.trustedKmsRoots` must refuse).
   */
  readonly caSeed?: string;
  /**
   * A faulty app CA (chain 'kms'), for KMS-pin tests: `notAfter` ends its
   * validity (an expired app CA), `appIdClaim` (20 bytes) replaces the app-id
   * the KMS claims for it (APP_ID_MISMATCH against the RTMR3 app-id).
   */
  readonly appCa?: { readonly notAfter?: Date; readonly appIdClaim?: BytesLike };
}

/** A GetTlsKey request (docs/protocol.md §4), camel-cased. Times are Unix seconds. */
export interface DstackTlsKeyRequest {
  /** CN of the leaf. Default `""` (what the guest agent gets when the field is absent). */
  readonly subject?: string;
  /** DNS names or IP addresses. */
  readonly altNames?: readonly string[];
  /** Embed the attestation. Default false: no attestation extension, as dstack. */
  readonly usageRaTls?: boolean;
  readonly usageServerAuth?: boolean;
  readonly usageClientAuth?: boolean;
  /** Default 1975-01-01, as dstack. */
  readonly notBefore?: number;
  /** Default now + 3650 days, as dstack. */
  readonly notAfter?: number;
  /** Add the app-info claim (extension 1.9). */
  readonly withAppInfo?: boolean;
  /** Faults for this certificate only (over the issuer's). */
  readonly faults?: DstackIssuerFaults;
}

/** What GetTlsKey answers, plus the leaf's DER and SPKI for tests. */
export interface DstackTlsKey {
  /** PKCS#8 PEM of the fresh P-256 key. */
  readonly key: string;
  /** PEM certificates, leaf first. */
  readonly certificateChain: readonly string[];
  readonly leafDer: Uint8Array;
  /** DER SubjectPublicKeyInfo of the leaf. */
  readonly spki: Uint8Array;
}

/** The guest agent's GetQuote response body (docs/protocol.md §4). */
export interface DstackQuoteResponse {
  /** Hex. */
  readonly quote: string;
  /** JSON array of `{imr, event_type, digest, event, event_payload}` (the IMR 3 runtime events). */
  readonly event_log: string;
  /** Hex, 64 bytes. */
  readonly report_data: string;
  readonly vm_config: string;
}

/** The guest agent's Info response body (docs/protocol.md §4). Hex fields lowercase. */
export interface DstackInfoResponse {
  readonly app_id: string;
  readonly instance_id: string;
  readonly app_name: string;
  readonly device_id: string;
  readonly mr_aggregated: string;
  readonly os_image_hash: string;
  readonly key_provider_info: string;
  readonly compose_hash: string;
  readonly app_cert: string;
  /** JSON text: mrtd, rtmr0..3, mr_aggregated, os_image_hash, compose_hash, device_id, event_log, app_compose. */
  readonly tcb_info: string;
  readonly vm_config: string;
  readonly cloud_vendor: string;
  readonly cloud_product: string;
}

/** What a verifier should find in this issuer's evidence (lowercase hex). */
export interface DstackExpectedIdentity {
  readonly mrtd: string;
  readonly rtmr0: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
  /** The replay of {@link runtimeEvents}. */
  readonly rtmr3: string;
  readonly appId: string;
  readonly composeHash: string;
  readonly instanceId: string;
  readonly osImageHash: string;
  readonly keyProvider: string;
  readonly runtimeEvents: readonly RuntimeEvent[];
}

/** A simulated dstack guest agent identity. Create one with {@link createDstackIssuer}. */
export interface DstackIssuer {
  readonly expected: DstackExpectedIdentity;
  /** The last certificate of every chain: the KMS root, or the local CA. Pin it to test chain pinning. */
  readonly rootCertificatePem: string;
  /** GetTlsKey: a fresh key and its certificate chain. Rejects with BAD_CONFIG on a bad request. */
  issueTlsKey(request?: DstackTlsKeyRequest): Promise<DstackTlsKey>;
  /** GetQuote: `reportData` up to 64 bytes (hex or bytes), zero-padded. Throws BAD_CONFIG if longer. */
  getQuote(reportData: Uint8Array | string): DstackQuoteResponse;
  /** Info. */
  info(): DstackInfoResponse;
}

const DAY_MS = 86_400_000;
const DSTACK_NOT_BEFORE = new Date(Date.UTC(1975, 0, 1));
const DEFAULT_CA_SEED = 'pg-ra-tls dstack test KMS';
const DEFAULT_APP_NAME = 'pg-ra-tls-test';
const utf8 = new TextEncoder();

const fixed = (label: string, size: number): string =>
  toHex(sha256(utf8.encode(`pg-ra-tls test ${label}`))).slice(0, size * 2);

/** The app-compose document whose SHA-256 is the default compose-hash. */
function appComposeFor(appName: string, chain: 'kms' | 'local'): string {
  return JSON.stringify({
    manifest_version: 2,
    name: appName,
    runner: 'docker-compose',
    docker_compose_file:
      'services:\n  postgres:\n    image: postgres:17\n  teesql-sidecar:\n    image: teesql/sidecar\n    ports: ["5433:5433"]\n',
    kms_enabled: chain === 'kms',
    gateway_enabled: true,
    local_key_provider_enabled: chain === 'local',
    public_logs: false,
    public_sysinfo: true,
    public_tcbinfo: true,
  });
}

function badOption(option: string, expected: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `dstack issuer option ${option} must be ${expected}`, {
    details: { option },
  });
}

/** Lowercase hex of a BytesLike option of `size` bytes, or `fallback`. */
function hexOption(value: BytesLike | undefined, option: string, size: number, fallback: string) {
  if (value === undefined) return fallback;
  let bytes: Uint8Array;
  try {
    bytes = typeof value === 'string' ? fromHex(value) : new Uint8Array(value);
  } catch {
    throw badOption(option, `${size} bytes as hex or a Uint8Array`);
  }
  if (bytes.byteLength !== size) throw badOption(option, `${size} bytes, got ${bytes.byteLength}`);
  return toHex(bytes);
}

function stringOption(value: unknown, option: string, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string') throw badOption(option, 'a string');
  return value;
}

interface CaCertificate {
  readonly key: P256KeyPair;
  readonly name: Uint8Array;
  readonly pem: string;
}

/** A CA certificate of the dstack chain: O=Dstack, a CN, a path length and the 62397 claims. */
function caCertificate(
  key: P256KeyPair,
  subject: readonly NameAttribute[],
  pathLength: number,
  issuer: { readonly name: Uint8Array; readonly key: P256KeyPair } | 'self',
  seed: Uint8Array,
  claims: ReadonlyMap<string, Uint8Array>,
  notAfter: Date = new Date(Date.now() + 3650 * DAY_MS),
): CaCertificate {
  const name = encodeName(subject);
  const signer = issuer === 'self' ? { name, key } : issuer;
  const serialNumber = deriveBytes(seed, `serial:${subject.map((a) => a[1]).join('/')}`, 16);
  serialNumber[0] = (serialNumber[0]! & 0x7f) | 0x40;
  const der = encodeDstackCertificate(
    {
      subject,
      issuerName: signer.name,
      issuerKeyId: signer.key.keyId,
      publicKey: key.publicKey,
      notBefore: DSTACK_NOT_BEFORE,
      notAfter,
      caPathLength: pathLength,
      phalaExtensions: claims,
      serialNumber,
    },
    signer.key.privateKey,
  );
  return { key, name, pem: certificatePem(der) };
}

/** The runtime events dstack extends into RTMR3 at boot, in its order (docs/protocol.md §2). */
function bootEvents(identity: {
  appId: string;
  composeHash: string;
  instanceId: string;
  osImageHash: string;
  keyProvider: string;
  storageFs: string;
}): RuntimeEvent[] {
  const event = (name: string, payload: Uint8Array): RuntimeEvent =>
    Object.freeze({ event: name, payload });
  const empty = new Uint8Array(0);
  return [
    event('system-preparing', empty),
    event('app-id', fromHex(identity.appId)),
    event('compose-hash', fromHex(identity.composeHash)),
    event('instance-id', fromHex(identity.instanceId)),
    event('boot-mr-done', empty),
    event('os-image-hash', fromHex(identity.osImageHash)),
    event('key-provider', utf8.encode(identity.keyProvider)),
    event('storage-fs', utf8.encode(identity.storageFs)),
    event('system-ready', empty),
  ];
}

/** The same events with the compose-hash payload altered: they no longer replay to RTMR3. */
function tampered(events: readonly RuntimeEvent[]): RuntimeEvent[] {
  return events.map((event) =>
    event.event === 'compose-hash'
      ? Object.freeze({
          event: event.event,
          payload: sha256(utf8.encode('tampered'), event.payload),
        })
      : event,
  );
}

/** A copy with the last byte changed. */
function flipped(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(bytes);
  copy[copy.length - 1] = copy[copy.length - 1]! ^ 0xff;
  return copy;
}

function secondsOption(value: unknown, option: string): Date | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw badOption(option, 'a non-negative integer of Unix seconds');
  }
  return new Date(value * 1000);
}

/**
 * Creates a simulated dstack guest agent for one CVM identity, signing its
 * quotes with `options.authority`. Cheap (~0.6 ms measured): make one per
 * identity or fault. Throws BAD_CONFIG on a malformed option.
 */
export function createDstackIssuer(options: DstackIssuerOptions): DstackIssuer {
  if (typeof options?.authority?.issueQuote !== 'function') {
    throw badOption('authority', 'a TestAuthority from createTestAuthority');
  }
  const { authority } = options;
  const chain = options.chain ?? 'kms';
  if (chain !== 'kms' && chain !== 'local') throw badOption('chain', "'kms' or 'local'");
  const id = options.identity ?? {};
  const seed = utf8.encode(stringOption(options.caSeed, 'caSeed', DEFAULT_CA_SEED));
  const defaults = authority.describe().quoteDefaults;
  const measurements = {
    mrtd: hexOption(id.mrtd, 'identity.mrtd', 48, defaults.mrtd),
    rtmr0: hexOption(id.rtmr0, 'identity.rtmr0', 48, defaults.rtmr0),
    rtmr1: hexOption(id.rtmr1, 'identity.rtmr1', 48, defaults.rtmr1),
    rtmr2: hexOption(id.rtmr2, 'identity.rtmr2', 48, defaults.rtmr2),
  };
  const mrSignerSeam = hexOption(
    id.mrSignerSeam,
    'identity.mrSignerSeam',
    48,
    defaults.mrSignerSeam,
  );
  const appName = stringOption(id.appName, 'identity.appName', DEFAULT_APP_NAME);
  const appCompose = appComposeFor(appName, chain);
  const appId = hexOption(id.appId, 'identity.appId', 20, fixed('app-id', 20));
  const instanceId = hexOption(id.instanceId, 'identity.instanceId', 20, fixed('instance-id', 20));
  const deviceId = hexOption(id.deviceId, 'identity.deviceId', 32, fixed('device-id', 32));

  // docs/protocol.md §1: under a KMS the leaf is signed by an app CA derived per app-id, itself signed by the KMS root.
  const appIdClaim = new Map([[RA_TLS_OIDS.appId, fromHex(appId)]]);
  const caAppId = hexOption(options.appCa?.appIdClaim, 'appCa.appIdClaim', 20, appId);
  const caClaims = new Map([
    [RA_TLS_OIDS.appId, fromHex(caAppId)],
    [RA_TLS_OIDS.usage, utf8.encode('app:ca')],
  ]);
  const appCaNotAfter = options.appCa?.notAfter;
  if (appCaNotAfter !== undefined && !(appCaNotAfter instanceof Date)) {
    throw badOption('appCa.notAfter', 'a Date');
  }
  let signingCa: CaCertificate;
  let caChain: string[];
  let keyProviderDefault: string;
  if (chain === 'kms') {
    const rootKey = deriveP256Key(seed, 'kms-root-ca');
    const root = caCertificate(
      rootKey,
      [
        ['O', 'Dstack'],
        ['CN', 'Dstack KMS CA'],
      ],
      1,
      'self',
      seed,
      new Map(),
    );
    signingCa = caCertificate(
      deriveP256Key(seed, `app-ca:${appId}`),
      [
        ['O', 'Dstack'],
        ['CN', 'Dstack App CA'],
      ],
      0,
      { name: root.name, key: rootKey },
      seed,
      caClaims,
      appCaNotAfter,
    );
    caChain = [signingCa.pem, root.pem];
    const rootSpki = rootKey.publicKey.export({ type: 'spki', format: 'der' });
    keyProviderDefault = JSON.stringify({ name: 'kms', id: toHex(rootSpki) });
  } else {
    signingCa = caCertificate(
      deriveP256Key(seed, `local-ca:${instanceId}`),
      [
        ['O', 'Dstack'],
        ['CN', 'Dstack Local CA'],
      ],
      0,
      'self',
      seed,
      caClaims,
    );
    caChain = [signingCa.pem];
    keyProviderDefault = JSON.stringify({ name: 'local-sgx', id: fixed('local key provider', 32) });
  }

  const identity = {
    appId,
    composeHash: hexOption(
      id.composeHash,
      'identity.composeHash',
      32,
      toHex(sha256(utf8.encode(appCompose))),
    ),
    instanceId,
    osImageHash: hexOption(id.osImageHash, 'identity.osImageHash', 32, fixed('os-image', 32)),
    keyProvider: stringOption(id.keyProvider, 'identity.keyProvider', keyProviderDefault),
    storageFs: stringOption(id.storageFs, 'identity.storageFs', 'zfs'),
  };
  const events = Object.freeze(bootEvents(identity));
  const rtmr3 = toHex(replayRtmr3(events));
  const debug = id.debug === true;
  const issuerFaults = options.faults ?? {};
  const vmConfig = JSON.stringify({
    os_image_hash: identity.osImageHash,
    cpu_count: 2,
    memory_size: 4294967296,
    image: 'dstack-0.5.9',
    spec_version: 1,
  });
  // What dstack puts in the V0 envelope's config (docs/protocol.md §1): the sys-config it booted with.
  const sysConfig = JSON.stringify({
    kms_urls: chain === 'kms' ? ['https://kms.pg-ra-tls.invalid:8000'] : [],
    gateway_urls: ['https://gateway.pg-ra-tls.invalid:8000'],
    pccs_url: '',
    vm_config: vmConfig,
  });
  // Issuer claims only (1.9 is never trusted): SHA-256 digests standing in for dstack's aggregates.
  const mrSystem = sha256(
    ...[measurements.mrtd, measurements.rtmr0, measurements.rtmr1, measurements.rtmr2].map(fromHex),
  );
  const mrAggregated = sha256(mrSystem, fromHex(rtmr3));

  const quoteFor = (reportData: Uint8Array, faults: DstackIssuerFaults): Uint8Array =>
    authority.issueQuote({
      ...measurements,
      rtmr3,
      mrSignerSeam,
      debug,
      ...faults.quote,
      reportData,
    });
  const eventsFor = (faults: DstackIssuerFaults) =>
    faults.tamperEvents === true ? tampered(events) : events;

  const issueTlsKey = async (request: DstackTlsKeyRequest = {}): Promise<DstackTlsKey> => {
    const faults = { ...issuerFaults, ...request.faults };
    const subject = stringOption(request.subject, 'subject', '');
    const altNames = request.altNames ?? [];
    if (!Array.isArray(altNames) || !altNames.every((name) => typeof name === 'string')) {
      throw badOption('altNames', 'an array of strings');
    }
    const notBefore = secondsOption(request.notBefore, 'notBefore') ?? DSTACK_NOT_BEFORE;
    const notAfter =
      secondsOption(request.notAfter, 'notAfter') ?? new Date(Date.now() + 3650 * DAY_MS);
    if (notAfter <= notBefore) throw badOption('notAfter', 'later than notBefore');
    if (faults.bindTo !== undefined && !(faults.bindTo instanceof Uint8Array)) {
      throw badOption('faults.bindTo', 'the DER SubjectPublicKeyInfo bytes of another key');
    }

    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = spkiOf(publicKey);
    const extensions = new Map<string, Uint8Array>(appIdClaim);
    extensions.set(RA_TLS_OIDS.usage, utf8.encode('app:custom'));
    if (request.usageRaTls === true) {
      // docs/protocol.md §1: report_data = SHA-512("ratls-cert:" ‖ SPKI) binds the quote to this key.
      const reportData = expectedReportData(faults.bindTo ?? spki);
      const quote =
        faults.tamperQuote === true
          ? withReportData(quoteFor(flipped(reportData), faults), reportData)
          : quoteFor(reportData, faults);
      const shown = eventsFor(faults);
      if (options.legacy === true) {
        extensions.set(RA_TLS_OIDS.tdxQuote, quote);
        extensions.set(
          RA_TLS_OIDS.eventLog,
          utf8.encode(encodeLegacyEventLog(runtimeEventLogEntries(shown, false))),
        );
      } else {
        extensions.set(
          RA_TLS_OIDS.attestation,
          encodeVersionedAttestationV0({
            quote,
            eventLog: runtimeEventLogEntries(shown, true),
            runtimeEvents: shown,
            reportData,
            config: sysConfig,
          }),
        );
      }
    }
    if (request.withAppInfo === true) {
      extensions.set(
        RA_TLS_OIDS.appInfo,
        // Positional msgpack (docs/protocol.md §1): app_id, compose_hash, instance_id, device_id,
        // mr_system, mr_aggregated, os_image_hash, key_provider_info.
        encodeMsgpack([
          fromHex(identity.appId),
          fromHex(identity.composeHash),
          fromHex(identity.instanceId),
          fromHex(deviceId),
          mrSystem,
          mrAggregated,
          fromHex(identity.osImageHash),
          utf8.encode(identity.keyProvider),
        ]),
      );
    }
    const leafDer = encodeDstackCertificate(
      {
        subject: [['CN', subject]],
        issuerName: signingCa.name,
        issuerKeyId: signingCa.key.keyId,
        publicKey,
        notBefore,
        notAfter,
        serverAuth: request.usageServerAuth === true,
        clientAuth: request.usageClientAuth === true,
        altNames,
        phalaExtensions: extensions,
      },
      signingCa.key.privateKey,
    );
    return Object.freeze({
      key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      certificateChain: Object.freeze([certificatePem(leafDer), ...caChain]),
      leafDer,
      spki,
    });
  };

  const runtimeEventLogJson = (faults: DstackIssuerFaults) =>
    encodeLegacyEventLog(runtimeEventLogEntries(eventsFor(faults), false));

  const getQuote = (reportData: Uint8Array | string): DstackQuoteResponse => {
    let bytes: Uint8Array;
    try {
      bytes = typeof reportData === 'string' ? fromHex(reportData) : new Uint8Array(reportData);
    } catch {
      throw badOption('reportData', 'hex or a Uint8Array');
    }
    if (bytes.byteLength > 64)
      throw badOption('reportData', `at most 64 bytes, got ${bytes.byteLength}`);
    const padded = new Uint8Array(64);
    padded.set(bytes);
    return Object.freeze({
      quote: toHex(quoteFor(padded, issuerFaults)),
      event_log: runtimeEventLogJson(issuerFaults),
      report_data: toHex(padded),
      vm_config: vmConfig,
    });
  };

  const info = (): DstackInfoResponse => {
    const tcbInfo = {
      ...measurements,
      rtmr3,
      mr_aggregated: toHex(mrAggregated),
      os_image_hash: identity.osImageHash,
      compose_hash: identity.composeHash,
      device_id: deviceId,
      event_log: JSON.parse(runtimeEventLogJson(issuerFaults)) as unknown,
      app_compose: appCompose,
    };
    return Object.freeze({
      app_id: identity.appId,
      instance_id: identity.instanceId,
      app_name: appName,
      device_id: deviceId,
      mr_aggregated: toHex(mrAggregated),
      os_image_hash: identity.osImageHash,
      key_provider_info: identity.keyProvider,
      compose_hash: identity.composeHash,
      app_cert: '',
      tcb_info: JSON.stringify(tcbInfo, null, 2),
      vm_config: vmConfig,
      cloud_vendor: '',
      cloud_product: '',
    });
  };

  return Object.freeze({
    expected: Object.freeze({
      ...measurements,
      rtmr3,
      appId: identity.appId,
      composeHash: identity.composeHash,
      instanceId: identity.instanceId,
      osImageHash: identity.osImageHash,
      keyProvider: identity.keyProvider,
      runtimeEvents: events,
    }),
    rootCertificatePem: caChain[caChain.length - 1]!,
    issueTlsKey,
    getQuote,
    info,
  });
}

function spkiOf(publicKey: KeyObject): Uint8Array {
  return new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));
}
