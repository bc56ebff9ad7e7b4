/**
 * The one thing the README shims change: the root of trust. A README snippet
 * is production code, whose default verifier trusts only Intel's root, and no
 * Intel-signed quote can exist on a machine without TDX (docs/protocol.md §8). So
 * every factory a snippet imports defaults its `verifier` (and nothing else)
 * to the local stack's: DCAP with the pure-JS engine under the stack's test
 * root and PCCS, built exactly as `startLocalStack` builds
 * `clientOptions.verifier`. The stack runs in the test process, so the child
 * running the snippet rebuilds that verifier from two harness-only variables.
 */
import { RaTlsError } from '../../../src/errors.js';
import { DcapVerifier } from '../../../src/verification/dcap-verifier.js';
import type { RaTlsVerifier } from '../../../src/verification/verifier.js';

/** Base64 DER of the stack's test root CA (`stack.trustRoot.rootCaDer`). */
export const ROOT_CA_VARIABLE = 'PG_RA_TLS_README_ROOT_CA';
/** The stack's PCCS base URL (`stack.pccsUrl`). */
export const PCCS_URL_VARIABLE = 'PG_RA_TLS_README_PCCS_URL';

let verifier: RaTlsVerifier | undefined;

/** The stack's verifier, created on first use from the harness variables. */
export function stackVerifier(): RaTlsVerifier {
  if (verifier !== undefined) return verifier;
  const rootCa = process.env[ROOT_CA_VARIABLE];
  const pccsUrl = process.env[PCCS_URL_VARIABLE];
  if (rootCa === undefined || pccsUrl === undefined) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `the README shims need ${ROOT_CA_VARIABLE} and ${PCCS_URL_VARIABLE} from the local stack: ` +
        'run README snippets through test/readme.test.ts',
      { details: { option: 'verifier' } },
    );
  }
  verifier = new DcapVerifier({
    engine: 'js',
    rootCa: new Uint8Array(Buffer.from(rootCa, 'base64')),
    pccsUrl,
  });
  return verifier;
}

/**
 * `options` with `verifier` defaulted to the stack's when the caller gave
 * none. Anything that is not a plain options object (a pool, null, a string)
 * passes through unchanged, so the real factory still judges it.
 */
export function withStackVerifier<T>(options: T): T {
  if (options === null || typeof options !== 'object') return options;
  if (typeof (options as { connect?: unknown }).connect === 'function') return options;
  if ((options as { verifier?: unknown }).verifier !== undefined) return options;
  return { ...options, verifier: stackVerifier() };
}

/**
 * A class whose instances get the stack's verifier by default: `new Pool(options)`
 * as a README might write it. A Proxy keeps the class itself (statics,
 * `instanceof`, subclassing) and changes only the first constructor argument.
 */
export function withStackVerifierClass<C extends abstract new (...args: never[]) => object>(
  target: C,
): C {
  return new Proxy(target, {
    construct(base, args: unknown[], newTarget) {
      const [options, ...rest] = args;
      return Reflect.construct(base, [withStackVerifier(options), ...rest], newTarget);
    },
  });
}
