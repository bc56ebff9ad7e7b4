import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { RaTlsError } from '../errors.js';
import type { Policy } from '../policy/types.js';
import { DcapVerifier } from '../verification/dcap-verifier.js';

/** What {@link clientOptionsFromEnv} returns: spread it into any pg-ra-tls factory. */
export interface EnvClientOptions {
  readonly verifier: DcapVerifier;
  readonly policy: Policy;
  readonly dstackEndpoint?: string;
}

/**
 * Client options for the stack `pg-ra-tls dev` runs, from the environment it
 * prints: the test root (PG_RA_TLS_TRUST_ROOT, a PEM path or PEM text) and its
 * PCCS (PG_RA_TLS_PCCS_URL) for a pure-JS DCAP verifier, the guest agent
 * (DSTACK_SIMULATOR_ENDPOINT), and a policy pinned to EXPECTED_MRTD,
 * EXPECTED_APP_ID and EXPECTED_COMPOSE_HASH (or their PG_RA_TLS_EXPECTED_*
 * names). Test-only, like everything in pg-ra-tls/testing: the verifier trusts
 * a test root and logs that it does. Throws BAD_CONFIG naming a missing variable.
 */
export function clientOptionsFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  logger: (line: string) => void = console.warn,
): EnvClientOptions {
  const read = (names: readonly string[]): string => {
    for (const name of names) {
      const value = env[name];
      if (value !== undefined && value !== '') return value;
    }
    throw new RaTlsError(
      'BAD_CONFIG',
      `${names[0]} is not set: run \`eval "$(npx pg-ra-tls dev)"\` (or source its --write-env file) first`,
      { details: { option: names[0] } },
    );
  };
  const trustRoot = read(['PG_RA_TLS_TRUST_ROOT']);
  const dstackEndpoint = env['DSTACK_SIMULATOR_ENDPOINT'];
  return {
    verifier: new DcapVerifier({
      engine: 'js',
      rootCa: readRootCa(trustRoot, 'PG_RA_TLS_TRUST_ROOT'),
      pccsUrl: read(['PG_RA_TLS_PCCS_URL']),
      logger,
    }),
    policy: {
      allowedMrtds: [read(['EXPECTED_MRTD', 'PG_RA_TLS_EXPECTED_MRTD'])],
      allowedAppIds: [read(['EXPECTED_APP_ID', 'PG_RA_TLS_EXPECTED_APP_ID'])],
      allowedComposeHashes: [read(['EXPECTED_COMPOSE_HASH', 'PG_RA_TLS_EXPECTED_COMPOSE_HASH'])],
    },
    ...(dstackEndpoint === undefined || dstackEndpoint === '' ? {} : { dstackEndpoint }),
  };
}

/** DER of a CA certificate given as PEM text or the path of a PEM file. */
function readRootCa(value: string, option: string): Uint8Array {
  let pem = value;
  if (!value.includes('-----BEGIN')) {
    try {
      pem = readFileSync(value, 'utf8');
    } catch {
      throw new RaTlsError('BAD_CONFIG', `${option} is neither PEM text nor a readable PEM file`, {
        details: { option },
      });
    }
  }
  try {
    return new Uint8Array(new X509Certificate(pem).raw);
  } catch {
    throw new RaTlsError('BAD_CONFIG', `${option} is not a PEM certificate`, {
      details: { option },
    });
  }
}
