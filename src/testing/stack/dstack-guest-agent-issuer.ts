import { parseLegacyEventLog } from '../../evidence/versioned-attestation.js';
import { fromHex } from '../../util/bytes.js';
import type { DstackIssuer } from '../dstack-issuer.js';
import type { GuestAgentInfo, IssuedQuote, TlsKeyIssuer, TlsKeyRequest } from './guest-agent.js';

/**
 * Serves a {@link DstackIssuer} through the guest agent: the issuer answers in
 * dstack's wire shapes (hex, JSON text, snake_case), the agent's issuer
 * contract takes bytes, entries and camelCase, and the agent encodes them
 * back (docs/protocol.md §4).
 */
export function guestAgentIssuer(issuer: DstackIssuer): TlsKeyIssuer {
  return {
    async issueTlsKey(request: TlsKeyRequest) {
      const issued = await issuer.issueTlsKey(request);
      return { key: issued.key, certificateChain: issued.certificateChain };
    },
    async getQuote(reportData: Uint8Array): Promise<IssuedQuote> {
      const answer = issuer.getQuote(reportData);
      return {
        quote: fromHex(answer.quote),
        eventLog: parseLegacyEventLog(answer.event_log),
        vmConfig: answer.vm_config,
      };
    },
    info(): GuestAgentInfo {
      const info = issuer.info();
      return {
        appId: info.app_id,
        instanceId: info.instance_id,
        appName: info.app_name,
        composeHash: info.compose_hash,
        tcbInfo: JSON.parse(info.tcb_info) as Record<string, unknown>,
        deviceId: info.device_id,
        osImageHash: info.os_image_hash,
        keyProviderInfo: info.key_provider_info,
        vmConfig: info.vm_config,
      };
    },
  };
}
