/**
 * The PCK facts of a quote that select its collateral (docs/protocol.md §3): the
 * PCK certificate chain it carries, the platform's FMSPC from the Intel SGX
 * extension, and which PCK CA issued it.
 */
import { X509Certificate } from 'node:crypto';
import { describeCause, RaTlsError } from '../errors.js';
import { toHex } from '../util/bytes.js';
import { DER_TAG, derValue, readDerElement } from '../util/der.js';
import { pemBlocks } from '../util/pem.js';
import { readCertificateExtension } from '../util/x509-der.js';
import { dcapQvl } from './dcap-qvl.js';

/** Which PCK CA issued a platform's PCK certificate (selects the PCK CRL). */
export type PckCa = 'platform' | 'processor';

/** The PCK facts of a quote that select its collateral. */
export interface PckInfo {
  /** FMSPC from the PCK certificate's Intel SGX extension, 12 lowercase hex characters. */
  readonly fmspc: string;
  readonly ca: PckCa;
  /** The quote's PCK certificate chain (DER, leaf first). */
  readonly chain: readonly Uint8Array[];
}

// Intel SGX PCK certificate extension and its FMSPC member (Intel PCK Certificate and CRL spec).
const SGX_EXTENSION_OID = '1.2.840.113741.1.13.1';
const FMSPC_OID_HEX = '2a864886f84d010d0104';

/**
 * Reads the quote's PCK certificate chain (certification data type 5) and the
 * FMSPC and CA that select its collateral. Throws MALFORMED_QUOTE.
 */
export function readPckInfo(quote: Uint8Array): PckInfo {
  const { Quote } = dcapQvl();
  let pem: string;
  try {
    pem = Buffer.from(Quote.parse(quote).rawCertChain()).toString('utf8');
  } catch (cause) {
    throw new RaTlsError(
      'MALFORMED_QUOTE',
      `The quote's PCK certificate chain cannot be read (${describeCause(cause)}); only quotes carrying their PCK chain (certification data type 5) are supported`,
      { cause },
    );
  }
  let chain: Uint8Array[];
  try {
    chain = pemBlocks(pem, 'CERTIFICATE');
  } catch (cause) {
    throw new RaTlsError(
      'MALFORMED_QUOTE',
      `The quote's PCK certificate chain is not valid PEM (${describeCause(cause)})`,
      { cause },
    );
  }
  const leaf = chain[0];
  if (leaf === undefined) {
    throw new RaTlsError('MALFORMED_QUOTE', 'The quote carries an empty PCK certificate chain');
  }
  const fmspc = readFmspc(leaf);
  return { fmspc, ca: issuingCa(leaf), chain };
}

/**
 * A platform's PCK leaf is the same in every quote it makes, and which CA
 * issued it is a fact of its bytes: the last few answers are kept by DER, so
 * OpenSSL parses a leaf once (~0.2 ms on the event loop of each verification).
 */
const LEAVES_KEPT = 16;
const caOfLeaf = new Map<string, PckCa>();

/**
 * How many PCK leaves' issuing CAs are kept, for the test of that memory bound.
 * @internal
 */
export function pckLeavesKept(): number {
  return caOfLeaf.size;
}

function issuingCa(leaf: Uint8Array): PckCa {
  const key = Buffer.from(leaf.buffer, leaf.byteOffset, leaf.byteLength).toString('base64');
  const known = caOfLeaf.get(key);
  if (known !== undefined) return known;
  let issuer: string;
  try {
    issuer = new X509Certificate(leaf).issuer;
  } catch (cause) {
    throw new RaTlsError('MALFORMED_QUOTE', "The quote's PCK certificate cannot be parsed", {
      cause,
    });
  }
  // Intel names the issuing CA in the issuer CN; the PCK CRL is fetched per CA.
  const ca: PckCa = /Platform CA/i.test(issuer) ? 'platform' : 'processor';
  caOfLeaf.set(key, ca);
  if (caOfLeaf.size > LEAVES_KEPT) caOfLeaf.delete(caOfLeaf.keys().next().value!);
  return ca;
}

function readFmspc(leafDer: Uint8Array): string {
  try {
    // The strict DER reader finds the extension (a generic schema decoder took
    // ~5 ms per certificate, measured); readPckInfo has OpenSSL judge the whole leaf.
    const value = readCertificateExtension(leafDer, SGX_EXTENSION_OID);
    if (value !== undefined) {
      // SEQUENCE OF SEQUENCE { OID, value }
      const outer = readDerElement(value, 0);
      if (outer.tag !== DER_TAG.sequence) throw new Error('the SGX extension is not a SEQUENCE');
      for (let at = outer.valueStart; at < outer.end; ) {
        const entry = readDerElement(value, at);
        if (entry.end > outer.end) throw new Error('an SGX extension member overruns it');
        const oid = readDerElement(value, entry.valueStart);
        if (oid.end >= entry.end) throw new Error('an SGX extension member has no value');
        const member = readDerElement(value, oid.end);
        if (member.end > entry.end) throw new Error('an SGX extension value overruns its member');
        if (oid.tag === DER_TAG.oid && toHex(derValue(value, oid)) === FMSPC_OID_HEX) {
          if (member.tag === DER_TAG.octetString && member.end - member.valueStart === 6) {
            return toHex(derValue(value, member));
          }
        }
        at = entry.end;
      }
    }
  } catch (cause) {
    throw new RaTlsError('MALFORMED_QUOTE', "The quote's PCK certificate cannot be parsed", {
      cause,
    });
  }
  throw new RaTlsError(
    'MALFORMED_QUOTE',
    "The quote's PCK certificate has no FMSPC in its Intel SGX extension",
  );
}
