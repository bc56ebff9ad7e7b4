/**
 * What `pg-ra-tls verify` found, and its two renderings: aligned text for
 * people and a JSON document with stable field names for scripts. Pure: no
 * I/O, nothing secret (a server certificate and its attestation are public).
 */
import type { AttestationReport } from '../attest/report.js';
import type { AttestationFormat } from '../evidence/types.js';
import type { NormalizedPolicy } from '../policy/types.js';

/** Where the verifier anchors trust. */
export type RootOfTrust =
  | { readonly kind: 'intel-sgx-root-ca' }
  | { readonly kind: 'intel-trust-authority' }
  /** A test root given with --root-ca: nothing it vouches for says anything about real hardware. */
  | { readonly kind: 'custom'; readonly fingerprint: string; readonly path: string };

/** The server certificate as presented, whether or not its attestation holds. */
export interface PresentedCertificate {
  /** SHA-256 of the leaf DER, lowercase hex. */
  readonly fingerprint: string;
  readonly subject?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Where the attestation sits; absent when the certificate carries none (or cannot be read). */
  readonly attestationFormat?: AttestationFormat;
  /**
   * The report_data check of docs/protocol.md §1, run on its own so it is known
   * even when a later step fails: `not-checked` when the certificate or quote
   * could not be read.
   */
  readonly binding: 'verified' | 'failed' | 'not-checked';
}

/** The outcome of one `verify` run; `error` is set exactly when the server did not pass. */
export interface VerifyOutcome {
  /** The target as typed, password masked. */
  readonly input: string;
  readonly host: string;
  readonly port: number;
  readonly servername: string | undefined;
  /** The guest agent that issued our client certificate, or undefined when none was presented. */
  readonly clientCertificateFrom: string | undefined;
  /** Absent when the TLS handshake did not complete. */
  readonly certificate?: PresentedCertificate;
  /**
   * The verified attestation. When only the policy refused the server, this is
   * the report of the same certificate judged without policy pins: every
   * cryptographic check passed, the pins did not.
   */
  readonly report?: AttestationReport;
  /** The user's policy, as applied. */
  readonly policy: NormalizedPolicy;
  /** Warnings the user's policy deserves. */
  readonly warnings: readonly string[];
  readonly rootOfTrust: RootOfTrust;
  /** Set when the server was refused or could not be reached. */
  readonly error?: { readonly code: string; readonly message: string };
  /** True when `error` comes from the policy rather than from the evidence or transport. */
  readonly policyRefused: boolean;
  readonly timings: { readonly dialMs?: number; readonly verifyMs?: number };
}

/** Version of the JSON document; bumped only when a field changes meaning or goes away. */
export const VERIFY_JSON_VERSION = 1;

const LABEL_WIDTH = 15;

/** The human-readable report: one aligned `label  value` line per fact. */
export function formatVerifyText(outcome: VerifyOutcome): string {
  const lines: string[] = [];
  const line = (label: string, value: string) => lines.push(`${label.padEnd(LABEL_WIDTH)}${value}`);
  const { certificate, report } = outcome;

  line(
    'server',
    `${outcome.input === `${outcome.host}:${outcome.port}` ? outcome.input : `${outcome.input} -> ${outcome.host}:${outcome.port}`}` +
      (outcome.servername === undefined ? ' (no SNI)' : ` (SNI ${outcome.servername})`),
  );
  line(
    'client cert',
    outcome.clientCertificateFrom === undefined
      ? 'none (no dstack guest agent configured)'
      : `from the dstack guest agent at ${outcome.clientCertificateFrom}`,
  );
  if (certificate !== undefined) {
    line('fingerprint', `sha256 ${certificate.fingerprint}`);
    if (certificate.subject !== undefined) line('subject', certificate.subject || '(empty)');
    if (certificate.notBefore !== undefined && certificate.notAfter !== undefined) {
      line(
        'valid',
        `${certificate.notBefore.toISOString()} to ${certificate.notAfter.toISOString()}`,
      );
    }
    line(
      'format',
      certificate.attestationFormat === undefined
        ? 'no RA-TLS attestation'
        : `${certificate.attestationFormat}${report === undefined ? '' : `, TDX quote v${report.quoteVersion}`}`,
    );
    line('binding', bindingText(certificate.binding));
  }
  line('root of trust', rootOfTrustText(outcome.rootOfTrust));
  if (report !== undefined) {
    line('verifier', report.verifier);
    line(
      'tcb status',
      `${report.tcbStatus}${report.advisoryIds.length === 0 ? ' (no advisories)' : `, advisories ${report.advisoryIds.join(', ')}`}`,
    );
    line('debug td', report.isDebug ? `YES (td_attributes ${report.tdAttributes})` : 'no');
    line('mrtd', report.mrtd);
    line('rtmr0', report.rtmr0);
    line('rtmr1', report.rtmr1);
    line('rtmr2', report.rtmr2);
    line(
      'rtmr3',
      `${report.rtmr3}${report.app === undefined ? '' : ` (replayed from ${report.app.events.length} runtime events)`}`,
    );
    const app = report.app;
    if (app === undefined) {
      line('app', 'no runtime events: app-id and compose-hash are not attested');
    } else {
      line('app-id', app.appId ?? '(no app-id event)');
      line('compose-hash', app.composeHash ?? '(no compose-hash event)');
      line('instance-id', app.instanceId ?? '(no instance-id event)');
      line('key-provider', app.keyProvider ?? '(no key-provider event)');
    }
    line(
      'kms root',
      report.kms === undefined
        ? 'none: no verified [leaf, app CA, KMS root] chain was presented'
        : `spki sha256 ${report.kms.rootSpkiSha256}${report.kms.pinned ? ' (pinned by --kms-root)' : ' (not pinned)'}; app CA for app-id ${report.kms.appId}`,
    );
  }
  line('policy', policyText(outcome));
  for (const warning of outcome.warnings) line('warning', warning);
  line('result', resultText(outcome));
  return `${lines.join('\n')}\n`;
}

/** The machine-readable report (`--json`); field names are stable across releases. */
export function verifyJson(outcome: VerifyOutcome): Record<string, unknown> {
  const { certificate, report, policy } = outcome;
  return {
    version: VERIFY_JSON_VERSION,
    passed: outcome.error === undefined,
    error: outcome.error === undefined ? null : { ...outcome.error },
    target: {
      input: outcome.input,
      host: outcome.host,
      port: outcome.port,
      servername: outcome.servername ?? null,
    },
    clientCertificate:
      outcome.clientCertificateFrom === undefined
        ? null
        : { source: 'dstack-guest-agent', endpoint: outcome.clientCertificateFrom },
    certificate:
      certificate === undefined
        ? null
        : {
            fingerprint: certificate.fingerprint,
            subject: certificate.subject ?? null,
            notBefore: certificate.notBefore?.toISOString() ?? null,
            notAfter: certificate.notAfter?.toISOString() ?? null,
            attestationFormat: certificate.attestationFormat ?? null,
            binding: certificate.binding,
          },
    rootOfTrust: { ...outcome.rootOfTrust },
    attestation:
      report === undefined
        ? null
        : {
            verifier: report.verifier,
            quoteVersion: report.quoteVersion,
            tcbStatus: report.tcbStatus,
            advisoryIds: [...report.advisoryIds],
            isDebug: report.isDebug,
            tdAttributes: report.tdAttributes,
            mrSeam: report.mrSeam,
            mrtd: report.mrtd,
            rtmr0: report.rtmr0,
            rtmr1: report.rtmr1,
            rtmr2: report.rtmr2,
            rtmr3: report.rtmr3,
            reportData: report.reportData,
            kms: report.kms === undefined ? null : { ...report.kms },
            verifiedAt: new Date(report.verifiedAt).toISOString(),
          },
    app:
      report?.app === undefined
        ? null
        : {
            appId: report.app.appId ?? null,
            composeHash: report.app.composeHash ?? null,
            instanceId: report.app.instanceId ?? null,
            osImageHash: report.app.osImageHash ?? null,
            keyProvider: report.app.keyProvider ?? null,
            runtimeEvents: report.app.events.map((event) => event.event),
          },
    policy: {
      verdict: policyVerdict(outcome),
      allowedMrtds: [...policy.allowedMrtds],
      allowedAppIds: [...policy.allowedAppIds],
      allowedComposeHashes: [...policy.allowedComposeHashes],
      allowedMeasurements: policy.allowedMeasurements.map((set) => ({ ...set })),
      trustedKmsRoots: [...policy.trustedKmsRoots],
      allowDebugMode: policy.allowDebugMode,
      acceptableTcbStatuses: [...policy.acceptableTcbStatuses],
      warnings: [...outcome.warnings],
    },
    timings: {
      dialMs: roundMs(outcome.timings.dialMs),
      verifyMs: roundMs(outcome.timings.verifyMs),
    },
  };
}

/** `passed`, `failed` (the policy refused), or `not-evaluated` (evidence or transport failed first). */
function policyVerdict(outcome: VerifyOutcome): 'passed' | 'failed' | 'not-evaluated' {
  if (outcome.error === undefined) return 'passed';
  return outcome.policyRefused ? 'failed' : 'not-evaluated';
}

function policyText(outcome: VerifyOutcome): string {
  const verdict = policyVerdict(outcome);
  if (verdict === 'not-evaluated') return 'not evaluated (no verified attestation to judge)';
  if (verdict === 'failed') return `FAIL ${outcome.error?.code}: ${outcome.error?.message}`;
  return `PASS: ${policyRules(outcome.policy).join(', ')}`;
}

/** What the policy enforced, in the CLI's own option names. */
function policyRules(policy: NormalizedPolicy): string[] {
  const pinned = (values: readonly string[], what: string, flag: string) =>
    values.length === 0 ? `any ${what}` : `${what} in ${flag} (${values.length})`;
  return [
    pinned(policy.allowedMrtds, 'MRTD', '--mrtd'),
    policy.allowedMeasurements.length === 0
      ? 'any boot chain'
      : `boot chain in --rtmr*/--measurements (${policy.allowedMeasurements.length})`,
    pinned(policy.trustedKmsRoots, 'KMS root', '--kms-root'),
    pinned(policy.allowedAppIds, 'app-id', '--app-id'),
    pinned(policy.allowedComposeHashes, 'compose-hash', '--compose-hash'),
    `TCB ${policy.acceptableTcbStatuses.join('/')}`,
    policy.allowDebugMode ? 'debug TDs ALLOWED' : 'no debug TD',
  ];
}

function resultText(outcome: VerifyOutcome): string {
  const { dialMs, verifyMs } = outcome.timings;
  const took =
    dialMs === undefined
      ? ''
      : ` (TLS ${Math.round(dialMs)} ms${verifyMs === undefined ? '' : `, attestation ${Math.round(verifyMs)} ms`})`;
  if (outcome.error === undefined) return `VERIFIED${took}`;
  return `REFUSED: ${outcome.error.code}${took}`;
}

function bindingText(binding: PresentedCertificate['binding']): string {
  switch (binding) {
    case 'verified':
      return 'ok: the quote binds this certificate key (report_data = SHA-512("ratls-cert:" || SPKI))';
    case 'failed':
      return 'FAILED: the quote was made for another key';
    case 'not-checked':
      return 'not checked (no readable quote)';
  }
}

function rootOfTrustText(root: RootOfTrust): string {
  switch (root.kind) {
    case 'intel-sgx-root-ca':
      return "Intel's SGX Root CA (DCAP)";
    case 'intel-trust-authority':
      return 'Intel Trust Authority (hosted appraisal)';
    case 'custom':
      return `TEST ROOT from ${root.path} (sha256 ${root.fingerprint}), NOT Intel: proves nothing about real hardware`;
  }
}

function roundMs(ms: number | undefined): number | null {
  return ms === undefined ? null : Math.round(ms * 10) / 10;
}
