/**
 * The parsers pg-ra-tls runs on untrusted input, each with a structured
 * generator seeded by real data and the only error codes it may raise.
 * Shared by the bounded run in `npm test` (test/fuzz-parsers.test.ts) and the
 * long run of `npm run fuzz` (test/fuzz/main.ts).
 */
import assert from 'node:assert/strict';
import { constants as cryptoConstants, generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decode as decodeMsgpack, encode as encodeMsgpack } from '@msgpack/msgpack';
import fc from 'fast-check';
import { resolveConnectionSettings } from '../../src/config/connection-settings.js';
import { type ErrorCode, RaTlsError } from '../../src/errors.js';
import { readRaTlsCertificate } from '../../src/evidence/certificate.js';
import { parseQuote } from '../../src/evidence/quote.js';
import { ScaleReader } from '../../src/evidence/scale-reader.js';
import {
  decodeVersionedAttestation,
  parseLegacyEventLog,
} from '../../src/evidence/versioned-attestation.js';
import {
  createRaTlsCertificate,
  encodeLegacyEventLog,
  encodeVersionedAttestationV1,
} from '../../src/testing/ra-tls-certificate.js';
import { fromHex } from '../../src/util/bytes.js';
import { pemBlocks as pemCertificates } from '../../src/util/pem.js';
import {
  type Collateral,
  collateralWindow,
  normalizeCollateral,
} from '../../src/verification/collateral.js';
import { checkCrlsStrictly, parseCrl, verifyCrl } from '../../src/verification/crl.js';
import { verificationResultFromClaims } from '../../src/verification/intel-api-verifier.js';
import { localTokenKeys, verifyAttestationToken } from '../../src/verification/jwt.js';
import { readPckInfo } from '../../src/verification/pck-info.js';
import {
  applyMutations,
  applyTreeMutations,
  byteMutation,
  type MutatedBytes,
  mutatedBytes,
  mutatedText,
  treeMutation,
} from './mutations.js';

/** A parser under fuzz. */
export interface FuzzTarget<T = unknown> {
  readonly name: string;
  readonly input: fc.Arbitrary<T>;
  /** Runs the parser; returns (or resolves) normally, or throws (or rejects). */
  run(input: T): void | Promise<void>;
  /** The only codes a failure may carry. */
  readonly codes: readonly ErrorCode[];
  /** Inputs that must be refused (not merely survive), e.g. truncated length-exact encodings. */
  mustReject?(input: T): boolean;
  /**
   * Checks on the error besides its code (e.g. no secret in it). Returns a
   * reason to fail, or undefined.
   */
  checkError?(
    input: T,
    error: { message: string; details: unknown; cause?: unknown },
  ): string | undefined;
  /**
   * A defect already filed and being fixed elsewhere: the run reports it but
   * the bounded test marks it `todo` until the fix lands.
   */
  readonly knownOpen?: string;
  /**
   * Relative cost of one case (default 1): the bounded run in `npm test` gives
   * costly targets (full CRL signature checks, big msgpack trees) fewer cases.
   */
  readonly cost?: number;
}

const FIXTURES = new URL('../fixtures/', import.meta.url);
const fixture = (path: string) => new Uint8Array(readFileSync(new URL(path, FIXTURES)));

const EVIDENCE_CODES: readonly ErrorCode[] = [
  'MALFORMED_CERTIFICATE',
  'NO_ATTESTATION',
  'MALFORMED_ATTESTATION',
  'UNSUPPORTED_ATTESTATION_FORMAT',
  'MALFORMED_EVENT_LOG',
  'MALFORMED_QUOTE',
  'NOT_TDX',
];

const attestationV0 = fixture('dstack-attestation-v0/attestation.bin');
const dstackQuote = fixture('dstack-attestation-v0/quote.bin');
const intelQuotes = ['intel-tdx-v4', 'intel-tdx-v4-b', 'intel-tdx-v5', 'intel-sgx-v3'].map((name) =>
  fixture(`${name}/quote.bin`),
);
const decodedV0 = decodeVersionedAttestation(attestationV0);
const attestationV1 = encodeVersionedAttestationV1({
  quote: decodedV0.quote,
  eventLog: decodedV0.eventLog,
  runtimeEvents: decodedV0.runtimeEvents,
  reportData: decodedV0.reportData ?? new Uint8Array(64),
  config: decodedV0.config ?? '{}',
});
const v1Tree = decodeMsgpack(attestationV1);

/** Seeds of the certificate target: V0 (extension 1.8) and legacy (1.1 + 1.2) certificates. */
const certificates = [
  createRaTlsCertificate({ attestationBytes: attestationV0 }).certificateDer,
  createRaTlsCertificate({
    attestation: {
      format: 'legacy',
      quote: dstackQuote,
      runtimeEvents: decodedV0.runtimeEvents.slice(0, 3),
    },
  }).certificateDer,
  createRaTlsCertificate({ attestationBytes: attestationV1 }).certificateDer,
];

const truncated = (input: MutatedBytes) => input.truncatedOnly;

const certificateTarget: FuzzTarget<MutatedBytes> = {
  name: 'ra-tls-certificate',
  input: mutatedBytes(certificates),
  run: ({ bytes }) => {
    readRaTlsCertificate(bytes);
  },
  codes: EVIDENCE_CODES,
  mustReject: truncated,
};

const certificatePemTarget: FuzzTarget<string> = {
  name: 'ra-tls-certificate-pem',
  input: mutatedText(
    fc.constantFrom(...certificates).map((der) => {
      const base64 = Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n');
      return `-----BEGIN CERTIFICATE-----\n${base64}\n-----END CERTIFICATE-----\n`;
    }),
  ),
  run: (pem) => {
    readRaTlsCertificate(pem);
  },
  codes: EVIDENCE_CODES,
};

const envelopeV0Target: FuzzTarget<MutatedBytes> = {
  name: 'envelope-v0',
  input: mutatedBytes([attestationV0]),
  run: ({ bytes }) => {
    decodeVersionedAttestation(bytes);
  },
  codes: ['MALFORMED_ATTESTATION', 'UNSUPPORTED_ATTESTATION_FORMAT'],
  mustReject: truncated,
};

/** V1 envelopes: damaged bytes, or a damaged value tree re-encoded as valid msgpack. */
const envelopeV1Target: FuzzTarget<MutatedBytes> = {
  name: 'envelope-v1',
  cost: 4,
  input: fc.oneof(
    mutatedBytes([attestationV1]),
    fc.array(treeMutation, { minLength: 1, maxLength: 3 }).map((mutations) => ({
      bytes: encodeMsgpack(applyTreeMutations(v1Tree, mutations)),
      mutations: [],
      truncatedOnly: false,
    })),
  ),
  run: ({ bytes }) => {
    decodeVersionedAttestation(bytes);
  },
  codes: ['MALFORMED_ATTESTATION', 'UNSUPPORTED_ATTESTATION_FORMAT', 'MALFORMED_EVENT_LOG'],
  mustReject: truncated,
};

const quoteTarget: FuzzTarget<MutatedBytes> = {
  name: 'quote',
  input: mutatedBytes([dstackQuote, ...intelQuotes], { maxRandomLength: 1200 }),
  run: ({ bytes }) => {
    parseQuote(bytes);
  },
  codes: ['MALFORMED_QUOTE', 'NOT_TDX'],
};

const pckChainTarget: FuzzTarget<MutatedBytes> = {
  name: 'quote-pck-chain',
  cost: 2,
  input: mutatedBytes(intelQuotes.slice(0, 3), { maxRandomLength: 1200 }),
  run: ({ bytes }) => {
    readPckInfo(bytes);
  },
  codes: ['MALFORMED_QUOTE'],
};

const eventLogSeed = JSON.parse(encodeLegacyEventLog(decodedV0.eventLog)) as unknown;
const eventLogTarget: FuzzTarget<string> = {
  name: 'event-log',
  input: fc.oneof(
    mutatedText(fc.constant(JSON.stringify(eventLogSeed))),
    fc
      .array(treeMutation, { minLength: 1, maxLength: 3 })
      .map((mutations) => JSON.stringify(applyTreeMutations(eventLogSeed, mutations)) ?? ''),
  ),
  run: (text) => {
    parseLegacyEventLog(text);
  },
  codes: ['MALFORMED_EVENT_LOG'],
};

/** A program of SCALE reads over some bytes; the reader must never read past the end. */
type ScaleOp = 'u8' | 'u32' | 'compact' | 'count' | 'fixed' | 'vecU8' | 'string' | 'end';
const scaleTarget: FuzzTarget<{ bytes: Uint8Array; ops: { op: ScaleOp; n: number }[] }> = {
  name: 'scale',
  input: fc.record({
    bytes: fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      mutatedBytes([attestationV0.subarray(0, 256)]).map((m) => m.bytes),
    ),
    ops: fc.array(
      fc.record({
        op: fc.constantFrom<ScaleOp>(
          'u8',
          'u32',
          'compact',
          'count',
          'fixed',
          'vecU8',
          'string',
          'end',
        ),
        n: fc.oneof(fc.nat({ max: 80 }), fc.constantFrom(2 ** 30, 2 ** 32 - 1, 2 ** 53)),
      }),
      { maxLength: 12 },
    ),
  }),
  run: ({ bytes, ops }) => {
    const reader = new ScaleReader(bytes, 'fuzz input');
    let consumed = 0;
    for (const { op, n } of ops) {
      const before = reader.remaining;
      switch (op) {
        case 'u8':
          assert.ok(reader.u8('f') <= 0xff);
          break;
        case 'u32':
          assert.ok(reader.u32('f') <= 0xffffffff);
          break;
        case 'compact':
          assert.ok(reader.compact('f') <= 0xffffffff);
          break;
        case 'count':
          assert.ok(reader.count('f', 1 + (n % 8)) * (1 + (n % 8)) <= reader.remaining);
          break;
        case 'fixed':
          assert.equal(reader.fixed(n, 'f').byteLength, n);
          break;
        case 'vecU8':
          reader.vecU8('f');
          break;
        case 'string':
          reader.string('f');
          break;
        case 'end':
          reader.end();
          break;
      }
      consumed += before - reader.remaining;
      assert.ok(reader.remaining >= 0 && consumed <= bytes.byteLength, 'read past the end');
    }
  },
  codes: ['MALFORMED_ATTESTATION'],
};

// ---------------------------------------------------------------- DSN

/** A distinctive password, with the characters that break naive DSN handling. */
const password = fc.oneof(
  fc
    .string({ unit: fc.constantFrom(...'aZ9/#?@:\'\\ %&=+"x'), minLength: 4, maxLength: 14 })
    .map((s) => `Pw7${s}`),
  fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex')),
);

interface DsnInput {
  readonly dsn: string;
  readonly password: string;
  /** Apply the teesql credential rules (no allowCustomRoles). */
  readonly strict: boolean;
}

/** Mostly well-formed choices, sometimes broken ones, so both outcomes stay common. */
function mostly<T>(valid: readonly T[], broken: readonly T[]): fc.Arbitrary<T> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...valid) },
    { weight: 1, arbitrary: fc.constantFrom(...broken) },
  );
}

const urlDsn: fc.Arbitrary<DsnInput> = fc
  .record({
    scheme: mostly(
      ['postgres://', 'postgresql://', 'POSTGRES://'],
      ['postgress://', 'postgres:/', 'postgres:', 'pg://', 'http://', ''],
    ),
    user: mostly(['teesql_read', 'teesql_readwrite'], ['alice', '', 'teesql_read%', 'a:b']),
    password,
    host: mostly(['db.example', '127.0.0.1', '[::1]'], ['a,b', '/tmp', '', 'h%zz', '[::1', 'x y']),
    port: mostly(['', ':5433'], [':0', ':99999', ':abc', ':', ':-1']),
    database: mostly(['', '/app'], ['/a%2Fb', '/%', '/db?x']),
    query: fc.array(
      fc.tuple(
        mostly(
          ['application_name', 'connect_timeout', 'sslmode'],
          ['statement_timeout', 'host', 'password', 'options', 'bogus'],
        ),
        fc.string({ unit: fc.constantFrom(...'ab19'), maxLength: 4 }),
      ),
      { maxLength: 2 },
    ),
  })
  .chain((parts) => {
    const query = parts.query.map(([k, v]) => `${k}=${v}`).join('&');
    const dsn = `${parts.scheme}${parts.user}:${parts.password}@${parts.host}${parts.port}${parts.database}${query === '' ? '' : `?${query}`}`;
    return fc
      .tuple(mutatedText(fc.constant(dsn), "a/#?@:=&%' "), fc.boolean())
      .map(([text, strict]) => ({ dsn: text, password: parts.password, strict }));
  });

const keywordDsn: fc.Arbitrary<DsnInput> = fc
  .record({
    password,
    quoted: fc.boolean(),
    pairs: fc.array(
      fc.tuple(
        fc.constantFrom(
          'host',
          'hostaddr',
          'port',
          'user',
          'dbname',
          'sslmode',
          'bogus',
          'options',
          '',
        ),
        fc.constantFrom(
          'db.example',
          '127.0.0.1',
          '5433',
          'teesql_read',
          "'quoted value'",
          'a,b',
          '',
          "'",
        ),
      ),
      { maxLength: 5 },
    ),
  })
  .chain(({ password: secret, quoted, pairs }) => {
    const value = quoted ? `'${secret.replace(/[\\']/g, '\\$&')}'` : secret;
    const dsn = [...pairs.map(([k, v]) => `${k}=${v}`), `password=${value}`].join(' ');
    return fc
      .tuple(mutatedText(fc.constant(dsn), "a='\\ ="), fc.boolean())
      .map(([text, strict]) => ({ dsn: text, password: secret, strict }));
  });

function resolveDsn({ dsn, strict }: DsnInput): void {
  resolveConnectionSettings({ connectionString: dsn, allowCustomRoles: !strict }, {});
}

/** Resolves; a success must not show the password anywhere printable. */
function resolveDsnSecretly({ dsn, password: secret, strict }: DsnInput): void {
  const settings = resolveConnectionSettings(
    { connectionString: dsn, allowCustomRoles: !strict },
    {},
  );
  // A DSN that lost its user:password colon has no password: by its own grammar
  // the text is the (custom) role's name, which the settings must show to be
  // useful. Only that case is exempt: the DSN itself has no password field, and
  // the secret shows in the role name and nowhere else.
  if (
    !hasPasswordField(dsn) &&
    settings.password === undefined &&
    settings.user?.includes(secret) &&
    !settings.description.replace(settings.user, '').includes(secret)
  ) {
    return;
  }
  for (const shown of [settings.description, JSON.stringify(settings)]) {
    if (shown.includes(secret)) {
      throw new RaTlsError(
        'BAD_CONFIG',
        `fuzz: the password is visible in the resolved settings: ${shown}`,
      );
    }
  }
}

/**
 * Whether `dsn` carries a password field at all: a `:` in a URL's userinfo
 * (everything before its last `@`), or a `password` keyword.
 */
function hasPasswordField(dsn: string): boolean {
  const url = /^[a-z][a-z0-9+.-]*:\/\//i.exec(dsn);
  if (url === null) return /(^|\s)password\s*=/i.test(dsn);
  const rest = dsn.slice(url[0].length);
  const at = rest.lastIndexOf('@');
  return at >= 0 && rest.slice(0, at).includes(':');
}

/** The password must appear in no message, details or cause of a refused DSN. */
function secretFree(
  input: DsnInput,
  error: { message: string; details: unknown; cause?: unknown },
) {
  const texts = [
    error.message,
    JSON.stringify(error.details),
    String((error.cause as Error)?.message),
  ];
  return texts.some((text) => text.includes(input.password))
    ? `the password ${JSON.stringify(input.password)} leaked: ${error.message}`
    : undefined;
}

const dsnUrlTarget: FuzzTarget<DsnInput> = {
  name: 'dsn-url',
  input: urlDsn,
  run: resolveDsn,
  codes: ['BAD_CONFIG', 'BAD_CREDENTIALS'],
};

const dsnKeywordTarget: FuzzTarget<DsnInput> = {
  name: 'dsn-keyword',
  input: keywordDsn,
  run: resolveDsn,
  codes: ['BAD_CONFIG', 'BAD_CREDENTIALS'],
};

const dsnSecretTarget: FuzzTarget<DsnInput> = {
  name: 'dsn-secrets',
  input: fc.oneof(urlDsn, keywordDsn),
  run: resolveDsnSecretly,
  codes: ['BAD_CONFIG', 'BAD_CREDENTIALS'],
  checkError: secretFree,
};

// ---------------------------------------------------------------- JWT

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = rsa.publicKey.export({ format: 'jwk' });
const NOW_MS = Date.parse('2026-01-01T00:00:00Z');
const claims = {
  ver: '2.0.0',
  exp: NOW_MS / 1000 + 300,
  iat: NOW_MS / 1000 - 10,
  nbf: NOW_MS / 1000 - 10,
  tdx: {
    tdx_mrtd: 'ab'.repeat(48),
    tdx_rtmr0: '00'.repeat(48),
    tdx_rtmr1: '01'.repeat(48),
    tdx_rtmr2: '02'.repeat(48),
    tdx_rtmr3: '03'.repeat(48),
    tdx_report_data: '04'.repeat(64),
    attester_tcb_status: 'UpToDate',
    attester_advisory_ids: ['INTEL-SA-00001'],
    tdx_is_debuggable: false,
  },
};
const jwtHeader = {
  alg: 'PS384',
  typ: 'JWT',
  kid: 'k1',
  jku: 'https://portal.trustauthority.intel.com/certs',
};
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function signedToken(header: unknown, payload: unknown): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const signature = sign('sha384', Buffer.from(input), {
    key: rsa.privateKey,
    padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
    saltLength: 48,
  });
  return `${input}.${signature.toString('base64url')}`;
}
const validToken = signedToken(jwtHeader, claims);

const publishedJwks = { keys: [{ ...jwk, kid: 'k1', alg: 'PS384', use: 'sig' }] };
const publishedKeys = localTokenKeys(publishedJwks);
const tokenCheck = {
  jwksOrigin: 'https://portal.trustauthority.intel.com',
  jwksUrl: 'https://portal.trustauthority.intel.com/certs',
  now: new Date(NOW_MS),
  clockToleranceMs: 60_000,
};

const jwtTarget: FuzzTarget<string> = {
  name: 'jwt',
  input: fc.oneof(
    mutatedText(fc.constant(validToken), 'aZ09-_.=+/ '),
    fc
      .tuple(
        fc.array(treeMutation, { maxLength: 2 }),
        fc.array(treeMutation, { maxLength: 2 }),
        fc.boolean(),
      )
      .map(([headerEdits, payloadEdits, resign]) => {
        const header = applyTreeMutations(jwtHeader, headerEdits);
        const payload = applyTreeMutations(claims, payloadEdits);
        if (resign) return signedToken(header, payload);
        // The original signature over edited content: must never verify.
        return `${b64(header)}.${b64(payload)}.${validToken.split('.')[2]}`;
      }),
  ),
  run: async (token) => {
    const { header, payload, expMs } = await verifyAttestationToken(token, {
      ...tokenCheck,
      keys: await publishedKeys,
    });
    // Oracle: only a signing input we signed can verify.
    const signedAgain = signedToken(header, payload);
    assert.equal(
      signedAgain.split('.').slice(0, 2).join('.'),
      token.split('.').slice(0, 2).join('.'),
    );
    verificationResultFromClaims(payload, expMs);
  },
  codes: ['TOKEN_INVALID'],
};

const jwksTarget: FuzzTarget<unknown> = {
  name: 'jwks',
  input: fc
    .array(treeMutation, { maxLength: 3 })
    .map((edits) => applyTreeMutations(publishedJwks, edits)),
  run: async (document) => {
    // The valid token verifies only against a key set that still publishes its key.
    const { payload } = await verifyAttestationToken(validToken, {
      ...tokenCheck,
      keys: await localTokenKeys(document),
    });
    assert.deepEqual(payload, claims);
  },
  codes: ['TOKEN_INVALID'],
};

// ---------------------------------------------------------------- collateral and CRLs

const collateralJson = JSON.parse(
  readFileSync(new URL('intel-tdx-v4/collateral.json', FIXTURES), 'utf8'),
) as Record<string, unknown>;
const HEX_FIELDS = [
  'root_ca_crl',
  'pck_crl',
  'tcb_info_signature',
  'qe_identity_signature',
] as const;
const JSON_FIELDS = ['tcb_info', 'qe_identity'] as const;

const collateralTarget: FuzzTarget<unknown> = {
  name: 'collateral',
  cost: 4,
  input: fc.oneof(
    // The whole object damaged.
    fc
      .array(treeMutation, { minLength: 1, maxLength: 3 })
      .map((edits) => applyTreeMutations(collateralJson, edits)),
    // A byte field (a CRL, a signature) damaged at the byte level.
    fc
      .tuple(fc.constantFrom(...HEX_FIELDS), fc.array(byteMutation, { minLength: 1, maxLength: 3 }))
      .map(([field, edits]) => ({
        ...collateralJson,
        [field]: Buffer.from(
          applyMutations(fromHex(collateralJson[field] as string), edits),
        ).toString('hex'),
      })),
    // The signed TCB info / QE identity JSON text damaged.
    fc
      .tuple(
        fc.constantFrom(...JSON_FIELDS),
        fc.array(treeMutation, { minLength: 1, maxLength: 3 }),
      )
      .map(([field, edits]) => ({
        ...collateralJson,
        [field]: JSON.stringify(
          applyTreeMutations(JSON.parse(collateralJson[field] as string), edits),
        ),
      })),
  ),
  run: (collateral) => {
    const normalized = normalizeCollateral(collateral as Collateral, 'COLLATERAL_UNAVAILABLE');
    const window = collateralWindow(normalized);
    assert.ok(!Number.isNaN(window.notBefore) && !Number.isNaN(window.nextUpdate), 'NaN window');
  },
  codes: ['COLLATERAL_UNAVAILABLE', 'CRL_INVALID'],
};

const rootCrl = fromHex(collateralJson['root_ca_crl'] as string);
const pckCrl = fromHex(collateralJson['pck_crl'] as string);
const pckIssuerChain = pemCertificates(collateralJson['pck_crl_issuer_chain'] as string);
const intelV4Chain = readPckInfo(intelQuotes[0]!).chain;
const CRL_TIME = new Date(1751328000 * 1000);

const crlTarget: FuzzTarget<{ which: number; crl: MutatedBytes }> = {
  name: 'crl',
  cost: 4,
  input: fc.record({ which: fc.nat({ max: 1 }), crl: mutatedBytes([rootCrl, pckCrl]) }),
  run: ({ which, crl }) => {
    const label = which === 0 ? 'root CA CRL' : 'PCK CRL';
    const parsed = parseCrl(crl.bytes, label);
    verifyCrl(parsed, pckIssuerChain[which === 0 ? 1 : 0]!, CRL_TIME, label);
    checkCrlsStrictly({
      rootCaCrl: which === 0 ? crl.bytes : rootCrl,
      pckCrl: which === 1 ? crl.bytes : pckCrl,
      pckCrlIssuerChain: pckIssuerChain,
      pckChain: intelV4Chain,
      trustedRootCa: pckIssuerChain[1]!,
      now: CRL_TIME,
    });
  },
  codes: ['CRL_INVALID', 'PCK_REVOKED'],
  mustReject: ({ crl }) => crl.truncatedOnly,
};

/** Every target, in data-flow order. */
export const FUZZ_TARGETS: readonly FuzzTarget<never>[] = [
  certificateTarget,
  certificatePemTarget,
  envelopeV0Target,
  envelopeV1Target,
  quoteTarget,
  pckChainTarget,
  eventLogTarget,
  scaleTarget,
  dsnUrlTarget,
  dsnKeywordTarget,
  dsnSecretTarget,
  jwtTarget,
  jwksTarget,
  collateralTarget,
  crlTarget,
] as FuzzTarget<never>[];
