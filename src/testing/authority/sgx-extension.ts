/**
 * The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), laid
 * out as Intel's PCK Platform CA writes it (docs/protocol.md §8; Intel "SGX PCK
 * Certificate and CRL Profile"). Verifiers read FMSPC, PCEID, CPUSVN and PCESVN
 * from it to pick the TCB info and match a TCB level.
 */
import { boolean, enumerated, integer, objectIdentifier, octetString, sequence } from './der.js';

/** OID of the Intel SGX extension; its children are numbered below it. */
export const SGX_EXTENSION_OID = '1.2.840.113741.1.13.1';

/** Platform facts a PCK certificate carries. Byte fields are raw bytes. */
export interface PckPlatform {
  /** 16 bytes. */
  readonly ppid: Uint8Array;
  /** 16 bytes; each byte is also one of the 16 SGX TCB component SVNs. */
  readonly cpuSvn: Uint8Array;
  readonly pceSvn: number;
  /** 2 bytes. */
  readonly pceId: Uint8Array;
  /** 6 bytes. */
  readonly fmspc: Uint8Array;
  /** 16 bytes (present in certificates from the Platform CA). */
  readonly platformInstanceId: Uint8Array;
}

/** SGX type 1 = "Scalable", what TDX-capable platforms report. */
const SGX_TYPE_SCALABLE = 1;

function entry(childArc: string, value: Uint8Array): Uint8Array {
  return sequence(objectIdentifier(`${SGX_EXTENSION_OID}.${childArc}`), value);
}

/**
 * DER of the extension value (the content of extnValue): a SEQUENCE of
 * (OID, value) pairs: PPID, TCB {comp01..16 SVN, PCESVN, CPUSVN}, PCE-ID, FMSPC,
 * SGX type, platform instance id, configuration.
 */
export function encodeSgxExtension(platform: PckPlatform): Uint8Array {
  const components = Array.from(platform.cpuSvn, (svn, index) =>
    entry(`2.${index + 1}`, integer(svn)),
  );
  const tcb = sequence(
    ...components,
    entry('2.17', integer(platform.pceSvn)),
    entry('2.18', octetString(platform.cpuSvn)),
  );
  const configuration = sequence(
    entry('7.1', boolean(true)),
    entry('7.2', boolean(true)),
    entry('7.3', boolean(true)),
  );
  return sequence(
    entry('1', octetString(platform.ppid)),
    entry('2', tcb),
    entry('3', octetString(platform.pceId)),
    entry('4', octetString(platform.fmspc)),
    entry('5', enumerated(SGX_TYPE_SCALABLE)),
    entry('6', octetString(platform.platformInstanceId)),
    entry('7', configuration),
  );
}
