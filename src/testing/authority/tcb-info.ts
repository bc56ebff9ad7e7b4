/**
 * TCB info (TDX, version 3) and QE identity (TD_QE, version 2) JSON texts, laid
 * out like Intel's PCS answers (docs/protocol.md §3, §8). Pure: the caller signs the
 * exact text returned here.
 */
import { toHex } from '../../util/bytes.js';
import type { TcbStatus } from '../../verification/verifier.js';

/** A status a TCB level can carry (`Unknown` is an engine verdict, never in TCB info). */
export type TcbLevelStatus = Exclude<TcbStatus, 'Unknown'>;

/**
 * One TCB level. SVN fields default to the platform's own values, so a level
 * with only `status` is exactly what the authority's quotes match.
 */
export interface TestTcbLevel {
  readonly status: TcbLevelStatus;
  readonly advisoryIds?: readonly string[];
  /** Default 2024-03-13T00:00:00Z. */
  readonly tcbDate?: Date;
  /** The 16 SGX TCB component SVNs (default: the PCK certificate's CPUSVN bytes). */
  readonly sgxSvns?: readonly number[];
  /** Default: the PCK certificate's PCESVN. */
  readonly pceSvn?: number;
  /** The 16 TDX TCB component SVNs (default: the quote's tee_tcb_svn bytes). */
  readonly tdxSvns?: readonly number[];
}

/** The platform TCB a quote from the authority presents. */
export interface PlatformTcb {
  /** 16 bytes, from the PCK certificate. */
  readonly cpuSvn: Uint8Array;
  /** From the PCK certificate. */
  readonly pceSvn: number;
  /** 16 bytes, from the quote's TD report. */
  readonly teeTcbSvn: Uint8Array;
}

const DEFAULT_TCB_DATE = new Date('2024-03-13T00:00:00Z');
const OLDER_TCB_DATE = new Date('2023-08-09T00:00:00Z');
const NEWER_TCB_DATE = new Date('2025-02-12T00:00:00Z');

/**
 * TCB levels under which the authority's platform TCB maps to `status`, the way
 * Intel's lists read: newest first; for anything but UpToDate a newer UpToDate
 * level (one PCESVN higher) exists that the platform does not reach.
 */
export function tcbLevelsFor(
  status: TcbLevelStatus,
  advisoryIds: readonly string[],
  platform: PlatformTcb,
): TestTcbLevel[] {
  const older: TestTcbLevel = { status: 'OutOfDate', pceSvn: 0, tcbDate: OLDER_TCB_DATE };
  if (status === 'UpToDate') return [{ status, advisoryIds }, older];
  return [
    { status: 'UpToDate', pceSvn: platform.pceSvn + 1, tcbDate: NEWER_TCB_DATE },
    { status, advisoryIds },
    older,
  ];
}

/** Intel's date format: ISO 8601 in UTC without milliseconds. */
export function intelDate(date: Date): string {
  return `${date.toISOString().slice(0, 19)}Z`;
}

const SGX_COMPONENT_LABELS: readonly Record<string, string>[] = [
  { category: 'BIOS', type: 'Early Microcode Update' },
  { category: 'OS/VMM', type: 'SGX Late Microcode Update' },
  { category: 'OS/VMM', type: 'TXT SINIT' },
  { category: 'BIOS' },
  { category: 'BIOS' },
  { category: 'BIOS' },
  {},
  { category: 'OS/VMM', type: 'SEAMLDR ACM' },
];
const TDX_COMPONENT_LABELS: readonly Record<string, string>[] = [
  { category: 'OS/VMM', type: 'TDX Module' },
  { category: 'OS/VMM', type: 'TDX Module' },
  { category: 'OS/VMM', type: 'TDX Late Microcode Update' },
];

function components(svns: Iterable<number>, labels: readonly Record<string, string>[]) {
  return Array.from(svns, (svn, index) => ({ svn, ...labels[index] }));
}

const ZERO_MRSIGNER = '0'.repeat(96);

/** Inputs of a TCB info document. */
export interface TcbInfoContent {
  /** 6 bytes. */
  readonly fmspc: Uint8Array;
  /** 2 bytes. */
  readonly pceId: Uint8Array;
  readonly issueDate: Date;
  readonly nextUpdate: Date;
  readonly levels: readonly TestTcbLevel[];
  readonly platform: PlatformTcb;
}

/** The exact TCB info JSON text (the `tcbInfo` object Intel signs), TDX version 3. */
export function encodeTcbInfo(content: TcbInfoContent): string {
  const { platform } = content;
  const moduleMajor = platform.teeTcbSvn[1] ?? 0;
  const moduleSvn = platform.teeTcbSvn[0] ?? 0;
  const tcbInfo = {
    id: 'TDX',
    version: 3,
    issueDate: intelDate(content.issueDate),
    nextUpdate: intelDate(content.nextUpdate),
    fmspc: toHex(content.fmspc).toUpperCase(),
    pceId: toHex(content.pceId).toUpperCase(),
    tcbType: 0,
    tcbEvaluationDataNumber: 17,
    tdxModule: {
      mrsigner: ZERO_MRSIGNER,
      attributes: '0000000000000000',
      attributesMask: 'FFFFFFFFFFFFFFFF',
    },
    // Intel names module identities TDX_<major version> and matches tee_tcb_svn[0] against isvsvn.
    tdxModuleIdentities: [
      {
        id: `TDX_${moduleMajor.toString(16).padStart(2, '0').toUpperCase()}`,
        mrsigner: ZERO_MRSIGNER,
        attributes: '0000000000000000',
        attributesMask: 'FFFFFFFFFFFFFFFF',
        tcbLevels: [
          {
            tcb: { isvsvn: moduleSvn },
            tcbDate: intelDate(DEFAULT_TCB_DATE),
            tcbStatus: 'UpToDate',
          },
        ],
      },
    ],
    tcbLevels: content.levels.map((level) => ({
      tcb: {
        sgxtcbcomponents: components(level.sgxSvns ?? platform.cpuSvn, SGX_COMPONENT_LABELS),
        pcesvn: level.pceSvn ?? platform.pceSvn,
        tdxtcbcomponents: components(level.tdxSvns ?? platform.teeTcbSvn, TDX_COMPONENT_LABELS),
      },
      tcbDate: intelDate(level.tcbDate ?? DEFAULT_TCB_DATE),
      tcbStatus: level.status,
      ...(level.advisoryIds && level.advisoryIds.length > 0
        ? { advisoryIDs: [...level.advisoryIds] }
        : {}),
    })),
  };
  return JSON.stringify(tcbInfo);
}

/**
 * The quoting enclave the authority impersonates. Values are those of Intel's
 * TD_QE (public measurements), so the QE identity reads like the real one.
 */
export const TEST_QUOTING_ENCLAVE = Object.freeze({
  mrSigner: 'dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5',
  isvProdId: 2,
  isvSvn: 6,
  miscSelect: 0,
  /** 16 bytes: INIT | MODE64BIT | PROVISIONKEY, XFRM 0xe7; debug bit (0x02) clear. */
  attributes: '1500000000000000e700000000000000',
});

/** The exact QE identity JSON text (the `enclaveIdentity` object Intel signs), TD_QE version 2. */
export function encodeQeIdentity(issueDate: Date, nextUpdate: Date): string {
  return JSON.stringify({
    id: 'TD_QE',
    version: 2,
    issueDate: intelDate(issueDate),
    nextUpdate: intelDate(nextUpdate),
    tcbEvaluationDataNumber: 17,
    miscselect: '00000000',
    miscselectMask: 'FFFFFFFF',
    attributes: '11000000000000000000000000000000',
    attributesMask: 'FBFFFFFFFFFFFFFF0000000000000000',
    mrsigner: TEST_QUOTING_ENCLAVE.mrSigner.toUpperCase(),
    isvprodid: TEST_QUOTING_ENCLAVE.isvProdId,
    tcbLevels: [
      {
        tcb: { isvsvn: 4 },
        tcbDate: intelDate(DEFAULT_TCB_DATE),
        tcbStatus: 'UpToDate',
      },
    ],
  });
}
