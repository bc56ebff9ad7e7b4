/** The package version reported as the tracer version; test/telemetry.test.ts keeps it equal to package.json. */
export const PACKAGE_VERSION = '0.1.0';
