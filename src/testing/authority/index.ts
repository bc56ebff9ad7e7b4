/**
 * The DCAP test root of trust (docs/protocol.md §8): quotes and collateral under a
 * root of its own, accepted only by `@phala/dcap-qvl`'s
 * `QuoteVerifier.newWithRootCa(authority.rootCaDer)`. Never for production.
 */
export type { TcbLevelStatus, TestTcbLevel } from './tcb-info.js';
export { TDX_QUOTE_V4_OFFSETS, tamperQuote } from './tdx-quote.js';
export {
  type BytesLike,
  type CollateralOptions,
  createTestAuthority,
  type IssueQuoteOptions,
  type TestAuthority,
  type TestAuthorityDescription,
  type TestAuthorityOptions,
  type TestCollateral,
} from './test-authority.js';
