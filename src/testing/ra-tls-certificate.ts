/**
 * Test-side mirror of the evidence layer: encoders for dstack's attestation
 * envelopes and a builder of RA-TLS certificates carrying a given quote.
 * Never use in production: nothing here proves anything.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from 'node:crypto';
import { isIP } from 'node:net';
import { encode as encodeMsgpack } from '@msgpack/msgpack';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
} from '@peculiar/asn1-x509';
import { RA_TLS_OIDS } from '../evidence/certificate.js';
import { quoteReportDataOffset } from '../evidence/quote.js';
import { DSTACK_RUNTIME_EVENT_TYPE, runtimeEventDigest } from '../evidence/rtmr3.js';
import type { EventLogEntry, RuntimeEvent } from '../evidence/types.js';
import { toHex } from '../util/bytes.js';

/** What {@link encodeVersionedAttestationV0} writes. */
export interface AttestationV0Input {
  /** V0 platform variant (0 DstackTdx, 1 DstackGcpTdx, ...). Default 0. */
  readonly platformVariant?: number;
  readonly quote: Uint8Array;
  readonly eventLog?: readonly EventLogEntry[];
  readonly runtimeEvents?: readonly RuntimeEvent[];
  /** 64 bytes; default all zero. */
  readonly reportData?: Uint8Array;
  /** Default `"{}"`. */
  readonly config?: string;
}

/** SCALE encoder of a `VersionedAttestation` V0 (docs/protocol.md §1), the mirror of the decoder. */
export function encodeVersionedAttestationV0(attestation: AttestationV0Input): Uint8Array {
  const out = new ScaleWriter();
  out.u8(0x00);
  out.u8(attestation.platformVariant ?? 0);
  out.vecU8(attestation.quote);
  const eventLog = attestation.eventLog ?? [];
  out.compact(eventLog.length);
  for (const entry of eventLog) {
    out.u32(entry.imr);
    out.u32(entry.eventType);
    out.vecU8(entry.digest);
    out.string(entry.event);
    out.vecU8(entry.eventPayload);
  }
  const runtimeEvents = attestation.runtimeEvents ?? [];
  out.compact(runtimeEvents.length);
  for (const event of runtimeEvents) {
    out.string(event.event);
    out.vecU8(event.payload);
  }
  const reportData = attestation.reportData ?? new Uint8Array(64);
  if (reportData.byteLength !== 64) throw new TypeError('reportData must be 64 bytes');
  out.raw(reportData);
  out.string(attestation.config ?? '{}');
  return out.bytes();
}

/**
 * Msgpack encoder of a `VersionedAttestation` V1 as dstack's rmp_serde writes
 * it: plain `Vec<u8>` fields (quote, report_data) as integer arrays, event
 * byte fields as bin.
 */
export function encodeVersionedAttestationV1(
  attestation: Omit<AttestationV0Input, 'platformVariant'> & {
    readonly platformKind?: string;
    readonly stackKind?: string;
  },
): Uint8Array {
  return encodeMsgpack({
    version: 1,
    platform: {
      kind: attestation.platformKind ?? 'tdx',
      data: {
        quote: Array.from(attestation.quote),
        event_log: (attestation.eventLog ?? []).map((entry) => ({
          imr: entry.imr,
          event_type: entry.eventType,
          digest: entry.digest,
          event: entry.event,
          event_payload: entry.eventPayload,
        })),
      },
    },
    stack: {
      kind: attestation.stackKind ?? 'dstack',
      data: {
        report_data: Array.from(attestation.reportData ?? new Uint8Array(64)),
        runtime_events: (attestation.runtimeEvents ?? []).map((event) => ({
          event: event.event,
          payload: event.payload,
        })),
        config: attestation.config ?? '{}',
      },
    },
  });
}

/** JSON text of a legacy event log (extension 1.2): hex byte fields (docs/protocol.md §1). */
export function encodeLegacyEventLog(entries: readonly EventLogEntry[]): string {
  return JSON.stringify(
    entries.map((entry) => ({
      imr: entry.imr,
      event_type: entry.eventType,
      digest: toHex(entry.digest),
      event: entry.event,
      event_payload: toHex(entry.eventPayload),
    })),
  );
}

/**
 * IMR 3 event-log entries for runtime events. `stripped` (the certificate
 * form, docs/protocol.md §1) leaves the digest empty; otherwise it is computed.
 */
export function runtimeEventLogEntries(
  events: readonly RuntimeEvent[],
  stripped = true,
): EventLogEntry[] {
  return events.map((event) => ({
    imr: 3,
    eventType: DSTACK_RUNTIME_EVENT_TYPE,
    digest: stripped ? new Uint8Array(0) : runtimeEventDigest(event),
    event: event.event,
    eventPayload: event.payload,
  }));
}

/** A copy of a TDX quote (v4 or v5) with its report_data replaced. The signature no longer verifies. */
export function withReportData(quote: Uint8Array, reportData: Uint8Array): Uint8Array {
  const version = quote.byteLength >= 2 ? quote[0]! | (quote[1]! << 8) : 0;
  const offset = quoteReportDataOffset(version);
  if (offset === undefined || quote.byteLength < offset + 64 || reportData.byteLength !== 64) {
    throw new TypeError('withReportData needs a v4/v5 quote and 64 bytes of report_data');
  }
  const patched = new Uint8Array(quote);
  patched.set(reportData, offset);
  return patched;
}

/** A P-256 key pair for a test certificate; `spki` is what report_data must bind. */
export interface RaTlsKeyPair {
  readonly privateKey: KeyObject;
  readonly privateKeyPem: string;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array;
}

/** Generates a P-256 key pair (dstack's key type, docs/protocol.md §1). */
export function generateRaTlsKeyPair(): RaTlsKeyPair {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return keyPairOf(privateKey);
}

/** What the certificate carries as attestation. */
export interface RaTlsAttestationOptions {
  /** `v0`: extension 1.8; `legacy`: 1.1 quote + 1.2 JSON event log. Default `v0`. */
  readonly format?: 'v0' | 'legacy';
  readonly quote: Uint8Array;
  readonly runtimeEvents?: readonly RuntimeEvent[];
  /** Default: the runtime events as IMR 3 entries (stripped for v0, with digests for legacy). */
  readonly eventLog?: readonly EventLogEntry[];
  /** V0 envelope report_data; default the quote's own report_data. */
  readonly reportData?: Uint8Array;
  /** V0 config JSON; default `"{}"`. */
  readonly config?: string;
}

/** Options of {@link createRaTlsCertificate}. */
export interface CreateRaTlsCertificateOptions {
  /** The attestation to embed; omit for a certificate without one. */
  readonly attestation?: RaTlsAttestationOptions;
  /** Make a CA certificate (basicConstraints cA, keyCertSign) to issue leaves, e.g. dstack's local CA. */
  readonly ca?: boolean;
  /** Raw payload of extension 1.8, embedded verbatim (wins over `attestation`). */
  readonly attestationBytes?: Uint8Array;
  /** Key of the certificate; default a fresh P-256 key. PEM (PKCS#8) or KeyObject. */
  readonly privateKey?: KeyObject | string;
  /** Issuer certificate (DER or PEM) and key; default self-signed. */
  readonly issuer?: {
    readonly certificate: Uint8Array | string;
    readonly privateKey: KeyObject | string;
  };
  /** Subject such as `"CN=db, O=teesql"`; default `"CN=pg-ra-tls test server"`. */
  readonly subject?: string;
  /** DNS names and IP addresses for the SAN; default `["localhost", "127.0.0.1"]`. */
  readonly altNames?: readonly string[];
  /** Default 1975-01-01 (dstack's default, docs/protocol.md §1). */
  readonly notBefore?: Date;
  /** Default now + 3650 days. */
  readonly notAfter?: Date;
  /** Issuer claims: 1.3 app_id (20 bytes), 1.4 usage string, 1.9 app info. Never trusted by readers. */
  readonly appId?: Uint8Array;
  readonly usage?: string;
  readonly appInfo?: Uint8Array;
  /** Extensions added verbatim: `extnValue` is the exact content of the extnValue OCTET STRING. */
  readonly rawExtensions?: readonly {
    readonly oid: string;
    readonly extnValue: Uint8Array;
    readonly critical?: boolean;
  }[];
}

/** A built test certificate and its key. */
export interface RaTlsTestCertificate {
  readonly certificateDer: Uint8Array;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly spki: Uint8Array;
}

const ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
const DAY_MS = 86_400_000;

/**
 * Builds an RA-TLS leaf certificate (P-256, ecdsa-with-SHA256) carrying a
 * given quote, signed by `issuer` or self-signed. To bind a quote, generate
 * the key first ({@link generateRaTlsKeyPair}), compute
 * `expectedReportData(spki)`, have the quote made for it, then pass the key here.
 */
export function createRaTlsCertificate(
  options: CreateRaTlsCertificateOptions = {},
): RaTlsTestCertificate {
  const keyPair = keyPairOf(
    options.privateKey === undefined
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
      : toPrivateKey(options.privateKey),
  );
  const subject = parseName(options.subject ?? 'CN=pg-ra-tls test server');
  let issuerName = subject;
  let signingKey = keyPair.privateKey;
  if (options.issuer !== undefined) {
    const issuerCertificate = AsnConvert.parse(toDer(options.issuer.certificate), Certificate);
    issuerName = issuerCertificate.tbsCertificate.subject;
    signingKey = toPrivateKey(options.issuer.privateKey);
  }

  const extensions: Extension[] = [
    extension(
      id_ce_basicConstraints,
      AsnConvert.serialize(new BasicConstraints({ cA: options.ca === true })),
      true,
    ),
    extension(
      id_ce_keyUsage,
      AsnConvert.serialize(
        new KeyUsage(
          options.ca === true
            ? KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign
            : KeyUsageFlags.digitalSignature | KeyUsageFlags.keyAgreement,
        ),
      ),
      true,
    ),
    extension(
      id_ce_extKeyUsage,
      AsnConvert.serialize(new ExtendedKeyUsage([id_kp_serverAuth, id_kp_clientAuth])),
    ),
    extension(
      id_ce_subjectAltName,
      AsnConvert.serialize(
        new SubjectAlternativeName(
          (options.altNames ?? ['localhost', '127.0.0.1']).map((name) =>
            isIP(name) === 0
              ? new GeneralName({ dNSName: name })
              : new GeneralName({ iPAddress: name }),
          ),
        ),
      ),
    ),
    ...attestationExtensions(options),
  ];
  if (options.appId !== undefined) extensions.push(wrapped(RA_TLS_OIDS.appId, options.appId));
  if (options.usage !== undefined) {
    extensions.push(wrapped(RA_TLS_OIDS.usage, new TextEncoder().encode(options.usage)));
  }
  if (options.appInfo !== undefined) extensions.push(wrapped(RA_TLS_OIDS.appInfo, options.appInfo));
  for (const raw of options.rawExtensions ?? []) {
    extensions.push(extension(raw.oid, raw.extnValue, raw.critical ?? false));
  }

  const serial = randomBytes(16);
  // DER INTEGERs are minimal and signed: a first byte in 0x40..0x7f is neither
  // negative nor zero padding (0x00 followed by < 0x80 is illegal, 1 time in 256).
  serial[0] = (serial[0]! & 0x3f) | 0x40;
  const algorithm = new AlgorithmIdentifier({ algorithm: ECDSA_WITH_SHA256 });
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: serial.buffer.slice(serial.byteOffset, serial.byteOffset + serial.byteLength),
    signature: algorithm,
    issuer: issuerName,
    validity: new Validity({
      notBefore: options.notBefore ?? new Date(Date.UTC(1975, 0, 1)),
      notAfter: options.notAfter ?? new Date(Date.now() + 3650 * DAY_MS),
    }),
    subject,
    subjectPublicKeyInfo: AsnConvert.parse(keyPair.spki, SubjectPublicKeyInfo),
    extensions: new Extensions(extensions),
  });
  const signature = sign('sha256', new Uint8Array(AsnConvert.serialize(tbs)), signingKey);
  const certificate = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm: algorithm,
    signatureValue: new Uint8Array(signature).buffer,
  });
  const certificateDer = new Uint8Array(AsnConvert.serialize(certificate));
  return Object.freeze({
    certificateDer,
    certificatePem: toPem(certificateDer),
    privateKeyPem: keyPair.privateKeyPem,
    spki: keyPair.spki,
  });
}

function attestationExtensions(options: CreateRaTlsCertificateOptions): Extension[] {
  if (options.attestationBytes !== undefined) {
    return [wrapped(RA_TLS_OIDS.attestation, options.attestationBytes)];
  }
  const attestation = options.attestation;
  if (attestation === undefined) return [];
  const runtimeEvents = attestation.runtimeEvents ?? [];
  if (attestation.format === 'legacy') {
    const eventLog = attestation.eventLog ?? runtimeEventLogEntries(runtimeEvents, false);
    return [
      wrapped(RA_TLS_OIDS.tdxQuote, attestation.quote),
      wrapped(RA_TLS_OIDS.eventLog, new TextEncoder().encode(encodeLegacyEventLog(eventLog))),
    ];
  }
  const offset = quoteReportDataOffset(attestation.quote[0]! | ((attestation.quote[1] ?? 0) << 8));
  const quoteReportData =
    offset !== undefined && attestation.quote.byteLength >= offset + 64
      ? attestation.quote.subarray(offset, offset + 64)
      : new Uint8Array(64);
  const payload = encodeVersionedAttestationV0({
    quote: attestation.quote,
    eventLog: attestation.eventLog ?? runtimeEventLogEntries(runtimeEvents),
    runtimeEvents,
    reportData: attestation.reportData ?? quoteReportData,
    config: attestation.config ?? '{}',
  });
  return [wrapped(RA_TLS_OIDS.attestation, payload)];
}

/** An extension whose payload is DER-wrapped in an OCTET STRING inside extnValue (docs/protocol.md §1). */
function wrapped(oid: string, payload: Uint8Array): Extension {
  return extension(oid, AsnConvert.serialize(new OctetString(payload)));
}

function extension(oid: string, extnValue: ArrayBuffer | Uint8Array, critical = false): Extension {
  return new Extension({ extnID: oid, critical, extnValue: new OctetString(extnValue) });
}

function keyPairOf(privateKey: KeyObject): RaTlsKeyPair {
  return Object.freeze({
    privateKey,
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    spki: new Uint8Array(createPublicKey(privateKey).export({ type: 'spki', format: 'der' })),
  });
}

function toPrivateKey(key: KeyObject | string): KeyObject {
  return typeof key === 'string' ? createPrivateKey(key) : key;
}

function toDer(certificate: Uint8Array | string): Uint8Array {
  if (typeof certificate !== 'string') return certificate;
  const body = certificate.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  return new Uint8Array(Buffer.from(body, 'base64'));
}

function toPem(der: Uint8Array): string {
  const base64 = Buffer.from(der).toString('base64');
  return `-----BEGIN CERTIFICATE-----\n${base64.replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END CERTIFICATE-----\n`;
}

const NAME_OIDS: Readonly<Record<string, string>> = {
  CN: '2.5.4.3',
  C: '2.5.4.6',
  L: '2.5.4.7',
  ST: '2.5.4.8',
  O: '2.5.4.10',
  OU: '2.5.4.11',
};

/** Parses `"CN=a, O=b"` (no escaping) into a Name, most significant first. */
function parseName(text: string): Name {
  return new Name(
    text
      .split(',')
      .map((part) => part.trim())
      .filter((part) => part.length > 0)
      .map((part) => {
        const [key, ...rest] = part.split('=');
        const oid = NAME_OIDS[key!.trim().toUpperCase()];
        if (oid === undefined || rest.length === 0)
          throw new TypeError(`unsupported name part ${part}`);
        const value = rest.join('=').trim();
        const attributeValue =
          oid === NAME_OIDS.C
            ? new AttributeValue({ printableString: value })
            : new AttributeValue({ utf8String: value });
        return new RelativeDistinguishedName([
          new AttributeTypeAndValue({ type: oid, value: attributeValue }),
        ]);
      }),
  );
}

/** Minimal SCALE writer for the encoder above. */
class ScaleWriter {
  readonly #chunks: Uint8Array[] = [];

  u8(value: number): void {
    this.#chunks.push(Uint8Array.of(value));
  }

  u32(value: number): void {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, value, true);
    this.#chunks.push(bytes);
  }

  compact(value: number): void {
    if (value < 1 << 6) this.u8(value << 2);
    else if (value < 1 << 14) {
      const v = (value << 2) | 0b01;
      this.#chunks.push(Uint8Array.of(v & 0xff, v >>> 8));
    } else if (value < 1 << 30) {
      this.u32(value * 4 + 0b10);
    } else {
      this.u8(0b11);
      this.u32(value);
    }
  }

  raw(bytes: Uint8Array): void {
    this.#chunks.push(new Uint8Array(bytes));
  }

  vecU8(bytes: Uint8Array): void {
    this.compact(bytes.byteLength);
    this.raw(bytes);
  }

  string(value: string): void {
    this.vecU8(new TextEncoder().encode(value));
  }

  bytes(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.#chunks));
  }
}
