/**
 * A fetch for PccsClient tests: requests for `base` (Intel PCS, another PCCS)
 * and for the Intel root's CRL distribution point go over real HTTP to a local
 * PCCS server (src/testing/pccs-server.ts) unless `answer` replaces the reply;
 * every URL asked for is recorded.
 */
export const INTEL_PCS = 'https://api.trustedservices.intel.com';
/** The Intel SGX Root CA names this CRL distribution point; Intel PCS has no /rootcacrl. */
export const ROOT_CRL_POINT = 'https://certificates.trustedservices.intel.com/IntelSGXRootCA.der';
export const ROOT_CRL_PATH = '/sgx/certification/v4/rootcacrl';

export type Answer = (
  path: string,
  forwarded: () => Promise<Response>,
) => Promise<Response | undefined> | undefined;

export function forwardingFetch(
  pccsUrl: string,
  base: string,
  answer: Answer = () => undefined,
): { requested: string[]; fetch: typeof fetch } {
  const requested: string[] = [];
  const fetchDouble = async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    requested.push(url);
    const path = url === ROOT_CRL_POINT ? ROOT_CRL_PATH : url.slice(base.length);
    const forwarded = () => fetch(`${pccsUrl}${path}`, init);
    return (await answer(path, forwarded)) ?? forwarded();
  };
  return { requested, fetch: fetchDouble as typeof fetch };
}
