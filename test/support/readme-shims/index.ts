/**
 * `pg-ra-tls` for README snippets: the real entry, with the factories that
 * take attestation options defaulting `verifier` to the local stack's (see
 * stack-verifier.ts). Everything else is re-exported untouched.
 */
import * as core from '../../../src/index.js';
import { withStackVerifier, withStackVerifierClass } from './stack-verifier.js';

export * from '../../../src/index.js';

/** `createPool`, defaulting `verifier` to the stack's. */
export const createPool: typeof core.createPool = (options) =>
  core.createPool(withStackVerifier(options));

/** `verifyServer`, defaulting `verifier` to the stack's. */
export const verifyServer: typeof core.verifyServer = (target, options) =>
  core.verifyServer(target, withStackVerifier(options));

/** `pgConnectOptsRaTls`, defaulting `verifier` to the stack's. */
export const pgConnectOptsRaTls: typeof core.pgConnectOptsRaTls = (dsn, options) =>
  core.pgConnectOptsRaTls(dsn, withStackVerifier(options));

/** `RaTlsPool`, whose `new` defaults `verifier` to the stack's. */
export const RaTlsPool = withStackVerifierClass(core.RaTlsPool);
/** The pool's instance type, as the real entry exports it. */
export type RaTlsPool = core.RaTlsPool;

/** `RaTlsClient`, whose `new` defaults `verifier` to the stack's. */
export const RaTlsClient = withStackVerifierClass(core.RaTlsClient);
/** The client's instance type, as the real entry exports it. */
export type RaTlsClient = core.RaTlsClient;

/** `AttestedConnector`, whose `new` defaults `verifier` to the stack's. */
export const AttestedConnector = withStackVerifierClass(core.AttestedConnector);
/** The connector's instance type, as the real entry exports it. */
export type AttestedConnector = core.AttestedConnector;
