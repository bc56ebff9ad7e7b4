/**
 * pg-ra-tls/testing: a test root of trust and a local attested stack for tests
 * and demos. Never use anything from here in production.
 */
export {};
