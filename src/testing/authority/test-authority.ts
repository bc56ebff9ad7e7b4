/**
 * A DCAP test root of trust (docs/protocol.md §8): a root CA, a PCK platform CA, a PCK
 * leaf with the Intel SGX extension and a TCB signing certificate, all under a
 * root of its own; collateral (TCB info, QE identity, CRLs) and TDX v4 quotes
 * signed under it. Only `@phala/dcap-qvl`'s `QuoteVerifier.newWithRootCa(rootCaDer)`
 * accepts them; Intel's production root never does. For tests and demos only.
 */
import { randomBytes } from 'node:crypto';
import { RaTlsError } from '../../errors.js';
import { fromHex, sha384, toHex } from '../../util/bytes.js';
import type { NormalizedCollateral } from '../../verification/collateral.js';
import {
  type CertificateSpec,
  certificatePem,
  encodeCertificate,
  encodeName,
  type NameAttribute,
} from './certificate.js';
import { encodeCrl } from './crl.js';
import { deriveBytes, deriveP256Key, type P256KeyPair } from './keys.js';
import { encodeSgxExtension, type PckPlatform, SGX_EXTENSION_OID } from './sgx-extension.js';
import {
  encodeQeIdentity,
  encodeTcbInfo,
  type PlatformTcb,
  type TcbLevelStatus,
  type TestTcbLevel,
  tcbLevelsFor,
} from './tcb-info.js';
import {
  assembleQuote,
  encodeQeCertificationData,
  encodeQuoteHeader,
  encodeTdReport10,
  signRaw,
} from './tdx-quote.js';

/** Bytes, or hex (`0x` and case tolerated). */
export type BytesLike = Uint8Array | string;

/** Options of {@link createTestAuthority}. Every default mirrors a real TDX platform. */
export interface TestAuthorityOptions {
  /** Seed (text or bytes) of every key, serial number and identifier. Default: random. */
  readonly seed?: string | Uint8Array;
  /** FMSPC (6 bytes) in the PCK certificate and TCB info. Default `7e57a0000000`. */
  readonly fmspc?: BytesLike;
  /** PCE-ID (2 bytes). Default `0000`. */
  readonly pceId?: BytesLike;
  /** CPUSVN (16 bytes) in the PCK certificate. Default `03030202040100050000000000000000`. */
  readonly cpuSvn?: BytesLike;
  /** PCESVN in the PCK certificate. Default 11. */
  readonly pceSvn?: number;
  /** tee_tcb_svn (16 bytes) of issued quotes and of the TCB levels. Default `06010300000000000000000000000000`. */
  readonly teeTcbSvn?: BytesLike;
  /** Validity of every certificate of the chain. Default 2018-01-01 to 2049-12-31. */
  readonly certificateValidity?: { readonly notBefore: Date; readonly notAfter: Date };
}

/**
 * Collateral in the shape both `@phala/dcap-qvl` engines take
 * (`QuoteCollateralV3`, docs/protocol.md §3): PEM chains, the exact signed JSON texts,
 * and byte fields as lowercase hex (as the WASM engine requires and the fixtures store).
 */
export type TestCollateral = NormalizedCollateral;

/** Options of {@link TestAuthority.collateral}. */
export interface CollateralOptions {
  /** issueDate of TCB info and QE identity, thisUpdate of the CRLs. Default: one day ago. */
  readonly issueDate?: Date;
  /** nextUpdate of all four documents. Default: issueDate + 30 days (Intel's cadence). */
  readonly nextUpdate?: Date;
  /** nextUpdate of the two CRLs only (for strict CRL checks). Default: `nextUpdate`. */
  readonly crlNextUpdate?: Date;
  /** The status the authority's quotes map to. Default `UpToDate`. Ignored with `tcbLevels`. */
  readonly tcbStatus?: TcbLevelStatus;
  /** Advisory ids of the matching level. Default none. Ignored with `tcbLevels`. */
  readonly advisoryIds?: readonly string[];
  /** An explicit TCB level list (newest first), e.g. one no quote matches. */
  readonly tcbLevels?: readonly TestTcbLevel[];
  /** Put the PCK certificate's serial into the PCK CRL (as after {@link TestAuthority.revokePck}). */
  readonly revokePck?: boolean;
  /** Further serial numbers (hex) for the PCK CRL. */
  readonly revokedSerials?: readonly string[];
}

/** Options of {@link TestAuthority.issueQuote}. 48-byte measurements unless noted. */
export interface IssueQuoteOptions {
  /** Up to 64 bytes, zero-padded to 64. Default all zero. */
  readonly reportData?: BytesLike;
  readonly mrtd?: BytesLike;
  readonly rtmr0?: BytesLike;
  readonly rtmr1?: BytesLike;
  readonly rtmr2?: BytesLike;
  /** Default all zero (no runtime events). */
  readonly rtmr3?: BytesLike;
  readonly mrSeam?: BytesLike;
  /** Default all zero, as dstack requires (docs/protocol.md §2). */
  readonly mrSignerSeam?: BytesLike;
  readonly mrConfigId?: BytesLike;
  readonly mrOwner?: BytesLike;
  readonly mrOwnerConfig?: BytesLike;
  /** Set the TD debug bit (`td_attributes[0] & 0x01`). Default false. */
  readonly debug?: boolean;
  /** 8 bytes; overrides `debug`. Default `0000001000000000` (SEPT_VE_DISABLE only). */
  readonly tdAttributes?: BytesLike;
  /** 8 bytes. Default `e702060000000000`. */
  readonly xfam?: BytesLike;
  /** 8 bytes. Default zero. */
  readonly seamAttributes?: BytesLike;
  /** 16 bytes. Default: the authority's `teeTcbSvn`. */
  readonly teeTcbSvn?: BytesLike;
}

/** Public facts of an authority and the values its quotes carry by default (hex lowercase). */
export interface TestAuthorityDescription {
  readonly fmspc: string;
  readonly pceId: string;
  readonly cpuSvn: string;
  readonly pceSvn: number;
  readonly teeTcbSvn: string;
  readonly pckSerialNumber: string;
  readonly pckRevoked: boolean;
  readonly quoteDefaults: {
    readonly mrtd: string;
    readonly rtmr0: string;
    readonly rtmr1: string;
    readonly rtmr2: string;
    readonly rtmr3: string;
    readonly mrSeam: string;
    readonly mrSignerSeam: string;
    readonly tdAttributes: string;
    readonly xfam: string;
    readonly reportData: string;
  };
}

/** A DCAP root of trust for tests. Create one with {@link createTestAuthority}. */
export interface TestAuthority {
  /** DER of the root CA: pass it to `QuoteVerifier.newWithRootCa` (pure-JS engine only). */
  readonly rootCaDer: Uint8Array;
  readonly rootCaPem: string;
  /** FMSPC, 12 lowercase hex digits. */
  readonly fmspc: string;
  /** Serial number of the PCK leaf, lowercase hex. */
  readonly pckSerialNumber: string;
  /** The PCK chain the quotes carry: leaf, platform CA, root (PEM). */
  readonly pckChainPem: string;
  /** Fresh collateral (signed now; cheap). */
  collateral(options?: CollateralOptions): TestCollateral;
  /** A signed TDX quote v4 (TD report 1.0). */
  issueQuote(options?: IssueQuoteOptions): Uint8Array;
  /** From now on, collateral lists the PCK certificate in the PCK CRL. */
  revokePck(): void;
  describe(): TestAuthorityDescription;
}

const DAY_MS = 86_400_000;
const CRL_BASE = 'https://pccs.pg-ra-tls.invalid';
const NAME_SUFFIX: readonly NameAttribute[] = [
  ['O', 'pg-ra-tls Test Authority'],
  ['L', 'Santa Clara'],
  ['ST', 'CA'],
  ['C', 'US'],
];
/** Intel's QE authentication data is 32 bytes 0x00..0x1f; mirror it. */
const QE_AUTH_DATA = Uint8Array.from({ length: 32 }, (_, index) => index);
const SEPT_VE_DISABLE_ONLY = '0000001000000000';

/** Fixed, recognisable default measurements (independent of the seed). */
const QUOTE_DEFAULTS = Object.freeze({
  mrtd: toHex(sha384(Buffer.from('pg-ra-tls test MRTD'))),
  rtmr0: toHex(sha384(Buffer.from('pg-ra-tls test RTMR0'))),
  rtmr1: toHex(sha384(Buffer.from('pg-ra-tls test RTMR1'))),
  rtmr2: toHex(sha384(Buffer.from('pg-ra-tls test RTMR2'))),
  rtmr3: '00'.repeat(48),
  mrSeam: toHex(sha384(Buffer.from('pg-ra-tls test MRSEAM'))),
  mrSignerSeam: '00'.repeat(48),
  tdAttributes: SEPT_VE_DISABLE_ONLY,
  xfam: 'e702060000000000',
  reportData: '00'.repeat(64),
});

function badOption(option: string, expected: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `test authority option ${option} must be ${expected}`, {
    details: { option },
  });
}

/** Bytes of a BytesLike option (a copy). */
function anyBytesOption(value: BytesLike, option: string): Uint8Array {
  try {
    return new Uint8Array(typeof value === 'string' ? fromHex(value) : value);
  } catch {
    throw badOption(option, 'hex or bytes');
  }
}

/** Bytes of a BytesLike option of exactly `size` bytes (or at most, zero-padded, with 'pad'). */
function bytesOption(
  value: BytesLike,
  option: string,
  size: number,
  pad: 'exact' | 'pad' = 'exact',
): Uint8Array {
  const bytes = anyBytesOption(value, option);
  if (pad === 'pad' && bytes.byteLength <= size) {
    const padded = new Uint8Array(size);
    padded.set(bytes);
    return padded;
  }
  if (bytes.byteLength !== size) {
    throw badOption(option, `${size} bytes, got ${bytes.byteLength}`);
  }
  return bytes;
}

function serialFrom(seed: Uint8Array, label: string): Uint8Array {
  const bytes = deriveBytes(seed, `serial:${label}`, 20);
  // A positive 20-byte INTEGER, like Intel's serials.
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes;
}

/** One certificate of the chain with what signing under it needs. */
interface ChainMember {
  readonly der: Uint8Array;
  readonly pem: string;
  /** DER Name of the subject (the issuer Name of what it signs). */
  readonly name: Uint8Array;
  readonly serialNumber: string;
}

interface AuthorityMaterial {
  readonly platform: PckPlatform;
  readonly teeTcbSvn: Uint8Array;
  readonly qeId: Uint8Array;
  readonly root: ChainMember;
  readonly platformCa: ChainMember;
  readonly pck: ChainMember;
  readonly tcbSigning: ChainMember;
  readonly platformCaKey: P256KeyPair;
  readonly rootKey: P256KeyPair;
  readonly tcbSigningKey: P256KeyPair;
  readonly attestationKey: P256KeyPair;
  readonly certificationData: Uint8Array;
}

class DcapTestAuthority implements TestAuthority {
  readonly rootCaDer: Uint8Array;
  readonly rootCaPem: string;
  readonly fmspc: string;
  readonly pckSerialNumber: string;
  readonly pckChainPem: string;
  readonly #material: AuthorityMaterial;
  readonly #platformTcb: PlatformTcb;
  readonly #header: Uint8Array;
  readonly #pckCrlIssuerChain: string;
  readonly #tcbIssuerChain: string;
  #pckRevoked = false;

  constructor(material: AuthorityMaterial) {
    this.#material = material;
    // A copy: the material may be shared with other instances of the same seed.
    this.rootCaDer = new Uint8Array(material.root.der);
    this.rootCaPem = material.root.pem;
    this.fmspc = toHex(material.platform.fmspc);
    this.pckSerialNumber = material.pck.serialNumber;
    this.pckChainPem = material.pck.pem + material.platformCa.pem + material.root.pem;
    this.#platformTcb = {
      cpuSvn: material.platform.cpuSvn,
      pceSvn: material.platform.pceSvn,
      teeTcbSvn: material.teeTcbSvn,
    };
    this.#header = encodeQuoteHeader(material.qeId);
    this.#pckCrlIssuerChain = material.platformCa.pem + material.root.pem;
    this.#tcbIssuerChain = material.tcbSigning.pem + material.root.pem;
  }

  collateral(options: CollateralOptions = {}): TestCollateral {
    const m = this.#material;
    const issueDate =
      options.issueDate ?? new Date(Math.floor((Date.now() - DAY_MS) / 1000) * 1000);
    const nextUpdate = options.nextUpdate ?? new Date(issueDate.getTime() + 30 * DAY_MS);
    const crlNextUpdate = options.crlNextUpdate ?? nextUpdate;
    for (const [option, date] of Object.entries({ issueDate, nextUpdate, crlNextUpdate })) {
      if (Number.isNaN(date.getTime())) throw badOption(option, 'a valid Date');
    }
    const levels =
      options.tcbLevels ??
      tcbLevelsFor(options.tcbStatus ?? 'UpToDate', options.advisoryIds ?? [], this.#platformTcb);
    const tcbInfo = encodeTcbInfo({
      fmspc: m.platform.fmspc,
      pceId: m.platform.pceId,
      issueDate,
      nextUpdate,
      levels,
      platform: this.#platformTcb,
    });
    const qeIdentity = encodeQeIdentity(issueDate, nextUpdate);
    const revokedSerials = [
      ...(this.#pckRevoked || options.revokePck ? [this.pckSerialNumber] : []),
      ...(options.revokedSerials ?? []),
    ];
    const revoked = revokedSerials.map((serial, index) => ({
      serialNumber: anyBytesOption(serial, `revokedSerials[${index}]`),
      revocationDate: issueDate,
    }));
    const rootCaCrl = encodeCrl(
      {
        issuerName: m.root.name,
        authorityKeyId: m.rootKey.keyId,
        thisUpdate: issueDate,
        nextUpdate: crlNextUpdate,
        revoked: [],
        crlNumber: 1,
      },
      m.rootKey.privateKey,
    );
    const pckCrl = encodeCrl(
      {
        issuerName: m.platformCa.name,
        authorityKeyId: m.platformCaKey.keyId,
        thisUpdate: issueDate,
        nextUpdate: crlNextUpdate,
        revoked,
        crlNumber: 1,
      },
      m.platformCaKey.privateKey,
    );
    const signature = (text: string) =>
      toHex(signRaw(Buffer.from(text, 'utf8'), m.tcbSigningKey.privateKey));
    return Object.freeze({
      pck_crl_issuer_chain: this.#pckCrlIssuerChain,
      root_ca_crl: toHex(rootCaCrl),
      pck_crl: toHex(pckCrl),
      tcb_info_issuer_chain: this.#tcbIssuerChain,
      tcb_info: tcbInfo,
      tcb_info_signature: signature(tcbInfo),
      qe_identity_issuer_chain: this.#tcbIssuerChain,
      qe_identity: qeIdentity,
      qe_identity_signature: signature(qeIdentity),
    });
  }

  issueQuote(options: IssueQuoteOptions = {}): Uint8Array {
    const measurement = (name: keyof typeof QUOTE_DEFAULTS & keyof IssueQuoteOptions) =>
      bytesOption((options[name] as BytesLike | undefined) ?? QUOTE_DEFAULTS[name], name, 48);
    const tdAttributes = bytesOption(
      options.tdAttributes ?? SEPT_VE_DISABLE_ONLY,
      'tdAttributes',
      8,
    );
    // The debug bit is TUD.DEBUG, bit 0 of td_attributes (docs/protocol.md §2).
    if (options.tdAttributes === undefined && options.debug) {
      tdAttributes[0] = tdAttributes[0]! | 0x01;
    }
    const body = encodeTdReport10({
      teeTcbSvn: bytesOption(options.teeTcbSvn ?? this.#material.teeTcbSvn, 'teeTcbSvn', 16),
      mrSeam: measurement('mrSeam'),
      mrSignerSeam: measurement('mrSignerSeam'),
      seamAttributes: bytesOption(options.seamAttributes ?? '00'.repeat(8), 'seamAttributes', 8),
      tdAttributes,
      xfam: bytesOption(options.xfam ?? QUOTE_DEFAULTS.xfam, 'xfam', 8),
      mrTd: measurement('mrtd'),
      mrConfigId: bytesOption(options.mrConfigId ?? '00'.repeat(48), 'mrConfigId', 48),
      mrOwner: bytesOption(options.mrOwner ?? '00'.repeat(48), 'mrOwner', 48),
      mrOwnerConfig: bytesOption(options.mrOwnerConfig ?? '00'.repeat(48), 'mrOwnerConfig', 48),
      rtmr0: measurement('rtmr0'),
      rtmr1: measurement('rtmr1'),
      rtmr2: measurement('rtmr2'),
      rtmr3: measurement('rtmr3'),
      reportData: bytesOption(
        options.reportData ?? QUOTE_DEFAULTS.reportData,
        'reportData',
        64,
        'pad',
      ),
    });
    const { attestationKey, certificationData } = this.#material;
    return assembleQuote(
      this.#header,
      body,
      { key: attestationKey.privateKey, point: attestationKey.publicPoint },
      certificationData,
    );
  }

  revokePck(): void {
    this.#pckRevoked = true;
  }

  describe(): TestAuthorityDescription {
    const { platform } = this.#material;
    return Object.freeze({
      fmspc: this.fmspc,
      pceId: toHex(platform.pceId),
      cpuSvn: toHex(platform.cpuSvn),
      pceSvn: platform.pceSvn,
      teeTcbSvn: toHex(this.#material.teeTcbSvn),
      pckSerialNumber: this.pckSerialNumber,
      pckRevoked: this.#pckRevoked,
      quoteDefaults: QUOTE_DEFAULTS,
    });
  }
}

/**
 * Material per seed and options: one seed gives one authority (the same
 * certificate bytes, not only the same keys) within a process, and repeated
 * creation costs nothing. Unseeded authorities are never cached.
 */
const materialCache = new Map<string, AuthorityMaterial>();

function cacheKey(seed: Uint8Array, options: TestAuthorityOptions): string {
  const normalised = (value: BytesLike | undefined) =>
    value === undefined || typeof value === 'string' ? value : toHex(value);
  return JSON.stringify([
    toHex(seed),
    normalised(options.fmspc),
    normalised(options.pceId),
    normalised(options.cpuSvn),
    options.pceSvn,
    normalised(options.teeTcbSvn),
    options.certificateValidity?.notBefore.toISOString(),
    options.certificateValidity?.notAfter.toISOString(),
  ]);
}

/**
 * Creates a DCAP test root of trust. The same `seed` and options give the same
 * keys, serial numbers and identifiers, and within one process the very same
 * certificates. Takes a few milliseconds (see the test-authority test's measurements).
 */
export async function createTestAuthority(
  options: TestAuthorityOptions = {},
): Promise<TestAuthority> {
  if (options.seed === undefined)
    return new DcapTestAuthority(buildMaterial(randomBytes(32), options));
  const seed = typeof options.seed === 'string' ? Buffer.from(options.seed, 'utf8') : options.seed;
  const key = cacheKey(seed, options);
  let material = materialCache.get(key);
  if (material === undefined) {
    material = buildMaterial(seed, options);
    materialCache.set(key, material);
  }
  return new DcapTestAuthority(material);
}

function buildMaterial(seed: Uint8Array, options: TestAuthorityOptions): AuthorityMaterial {
  const pceSvn = options.pceSvn ?? 11;
  if (!Number.isInteger(pceSvn) || pceSvn < 0 || pceSvn > 0xfffe) {
    throw badOption('pceSvn', 'an integer from 0 to 65534');
  }
  const platform: PckPlatform = {
    ppid: deriveBytes(seed, 'ppid', 16),
    cpuSvn: bytesOption(options.cpuSvn ?? '03030202040100050000000000000000', 'cpuSvn', 16),
    pceSvn,
    pceId: bytesOption(options.pceId ?? '0000', 'pceId', 2),
    fmspc: bytesOption(options.fmspc ?? '7e57a0000000', 'fmspc', 6),
    platformInstanceId: deriveBytes(seed, 'platform-instance-id', 16),
  };
  const teeTcbSvn = bytesOption(
    options.teeTcbSvn ?? '06010300000000000000000000000000',
    'teeTcbSvn',
    16,
  );
  const validity = options.certificateValidity ?? {
    notBefore: new Date('2018-01-01T00:00:00Z'),
    notAfter: new Date('2049-12-31T23:59:59Z'),
  };

  const rootKey = deriveP256Key(seed, 'root-ca');
  const platformCaKey = deriveP256Key(seed, 'pck-platform-ca');
  const pckKey = deriveP256Key(seed, 'pck');
  const tcbSigningKey = deriveP256Key(seed, 'tcb-signing');
  const attestationKey = deriveP256Key(seed, 'attestation');

  const rootCrlUrl = `${CRL_BASE}/sgx/certification/v4/rootcacrl`;
  const member = (
    label: string,
    commonName: string,
    key: P256KeyPair,
    issuer: { readonly name: Uint8Array; readonly key: P256KeyPair },
    shape: Pick<CertificateSpec, 'ca' | 'pathLength' | 'crlUrl' | 'extraExtensions'>,
  ): ChainMember => {
    const serial = serialFrom(seed, label);
    const name = encodeName([['CN', commonName], ...NAME_SUFFIX]);
    const der = encodeCertificate(
      {
        serialNumber: serial,
        issuer: issuer.name,
        subject: name,
        notBefore: validity.notBefore,
        notAfter: validity.notAfter,
        publicKey: key.publicKey,
        subjectKeyId: key.keyId,
        authorityKeyId: issuer.key.keyId,
        ...shape,
      },
      issuer.key.privateKey,
    );
    return { der, pem: certificatePem(der), name, serialNumber: toHex(serial) };
  };
  const rootName = encodeName([['CN', 'pg-ra-tls Test SGX Root CA'], ...NAME_SUFFIX]);
  const rootIssuer = { name: rootName, key: rootKey };
  const root = member('root-ca', 'pg-ra-tls Test SGX Root CA', rootKey, rootIssuer, {
    ca: true,
    pathLength: 1,
    crlUrl: rootCrlUrl,
  });
  const platformCa = member(
    'pck-platform-ca',
    'pg-ra-tls Test SGX PCK Platform CA',
    platformCaKey,
    rootIssuer,
    { ca: true, pathLength: 0, crlUrl: rootCrlUrl },
  );
  const pck = member(
    'pck',
    'pg-ra-tls Test SGX PCK Certificate',
    pckKey,
    { name: platformCa.name, key: platformCaKey },
    {
      ca: false,
      crlUrl: `${CRL_BASE}/sgx/certification/v4/pckcrl?ca=platform&encoding=der`,
      extraExtensions: [
        { oid: SGX_EXTENSION_OID, critical: false, value: encodeSgxExtension(platform) },
      ],
    },
  );
  const tcbSigning = member(
    'tcb-signing',
    'pg-ra-tls Test SGX TCB Signing',
    tcbSigningKey,
    rootIssuer,
    { ca: false, crlUrl: rootCrlUrl },
  );
  const pckChainPem = pck.pem + platformCa.pem + root.pem;
  return {
    platform,
    teeTcbSvn,
    qeId: deriveBytes(seed, 'qe-id', 16),
    root,
    platformCa,
    pck,
    tcbSigning,
    rootKey,
    platformCaKey,
    tcbSigningKey,
    attestationKey,
    certificationData: encodeQeCertificationData({
      attestationPoint: attestationKey.publicPoint,
      qeAuthData: QE_AUTH_DATA,
      pckKey: pckKey.privateKey,
      pckChainPem,
    }),
  };
}
