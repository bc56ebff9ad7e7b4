/**
 * A Node timer holds at most 2^31-1 ms (~24.8 days); a longer delay fires
 * after 1 ms. Every duration that feeds a timer is therefore refused above
 * that (BAD_CONFIG naming the option) instead of timing out at once or, for
 * an interval, running every millisecond (issue 10, item 9). The pool's own
 * timeouts are held in pool-hardening, PCCS's in pccs-client-edges; this file
 * holds the rest and keeps the list of durations that are not timers.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseVerifyArguments } from '../src/cli/verify.js';
import { resolveLeader } from '../src/cluster/discovery.js';
import { resolveConnectionSettings } from '../src/config/connection-settings.js';
import { isRaTlsError } from '../src/errors.js';
import { ClientIdentity } from '../src/identity/client-identity.js';
import { createPool } from '../src/pool/ra-tls-pool.js';
import { IntelApiVerifier } from '../src/verification/intel-api-verifier.js';

const PAST_THE_LIMIT = '30d';
const SECRET = 'a3'.repeat(32);
const DSN = `postgres://teesql_read:${SECRET}@127.0.0.1:5433/teesql`;
const SIGNER = `0x${'ab'.repeat(20)}`;

function refusedNaming(option: string) {
  return (error: unknown) => {
    assert.ok(isRaTlsError(error, 'BAD_CONFIG'), `${option}: ${String(error)}`);
    assert.equal(error.details?.option, option);
    assert.match(error.message, /~24\.8 days, the longest timer Node can hold/);
    assert.ok(!error.message.includes(SECRET), 'the password stays out of the message');
    return true;
  };
}

describe('durations that feed a timer are refused past ~24.8 days', () => {
  test('the guest agent request timeout', () => {
    assert.throws(
      () =>
        new ClientIdentity({
          dstackEndpoint: 'http://127.0.0.1:1',
          requestTimeout: PAST_THE_LIMIT,
        }),
      refusedNaming('requestTimeout'),
    );
  });

  test('the Trust Authority request timeout', () => {
    assert.throws(
      () =>
        new IntelApiVerifier({
          apiKey: 'k'.repeat(32),
          baseUrl: 'http://127.0.0.1:1',
          requestTimeout: PAST_THE_LIMIT,
        }),
      refusedNaming('requestTimeout'),
    );
  });

  test('a cluster’s refresh interval and lookup timeout (an interval past it would run every millisecond)', () => {
    for (const option of ['refreshEvery', 'lookupTimeout']) {
      assert.throws(
        () =>
          createPool({
            connectionString: DSN,
            clientCertOverride: { key: 'k', cert: 'c' },
            logger: () => {},
            cluster: { domain: 'db.example.com', signer: SIGNER, [option]: PAST_THE_LIMIT },
          }),
        refusedNaming(`cluster.${option}`),
      );
    }
  });

  test('resolveLeader’s timeout, before any lookup', async () => {
    await assert.rejects(
      resolveLeader('db.example.com', { signer: SIGNER, timeout: PAST_THE_LIMIT }),
      refusedNaming('timeout'),
    );
  });

  test('connection string timeouts (pg’s query timer; Postgres holds no more either)', () => {
    for (const parameter of [
      'statement_timeout',
      'query_timeout',
      'lock_timeout',
      'idle_in_transaction_session_timeout',
    ]) {
      assert.throws(
        () => resolveConnectionSettings({ connectionString: `${DSN}?${parameter}=2592000000` }),
        refusedNaming(`connection string parameter ${parameter}`),
      );
      // The largest a timer holds is accepted.
      const settings = resolveConnectionSettings({
        connectionString: `${DSN}?${parameter}=2147483647`,
      });
      assert.ok(settings !== undefined);
    }
  });

  test('the CLI’s --timeout is a usage error', () => {
    assert.throws(
      () => parseVerifyArguments(['127.0.0.1:5433', '--timeout', PAST_THE_LIMIT]),
      (error: unknown) => /--timeout must be at most/.test(String((error as Error).message)),
    );
  });
});

/**
 * parseDuration (no upper bound) is used only where a duration does not
 * become a timer's delay as it is; everything else uses parseTimeout. A new
 * call site must be added here with its reason, or use parseTimeout.
 */
const UNBOUNDED_DURATIONS: Readonly<Record<string, string>> = {
  'src/connection/attested-connector.ts reattestEvery':
    'an age; the sweep timer is clamped to its floor and ceiling (pool-hardening)',
  'src/verification/intel-api-verifier.ts jwksCacheTtl': 'an age compared with the clock',
  'src/verification/dcap-verifier.ts collateralMaxAge': 'an age, itself bounded to 24 hours',
  'src/identity/client-identity.ts clientCertLifetime':
    'a certificate validity; its refresh timer is clamped',
  'src/testing/local-stack.ts certificateLifetime': 'a certificate validity',
  'src/cli/dev.ts --certificate-lifetime': 'a certificate validity (checked, then passed on)',
};

test('every unbounded duration in src is one that never becomes a timer as it is', () => {
  const found: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith('.ts') && path !== join('src', 'util', 'duration.ts')) {
        const text = readFileSync(path, 'utf8');
        for (const match of text.matchAll(/parseDuration\(\s*[^,]+,\s*[`'"]([^`'"]+)[`'"]/g)) {
          found.push(`${path.split('\\').join('/')} ${match[1]}`);
        }
        const calls = text.match(/parseDuration\(/g)?.length ?? 0;
        const named = [...text.matchAll(/parseDuration\(\s*[^,]+,\s*[`'"]/g)].length;
        assert.equal(calls, named, `${path}: every parseDuration call names its option literally`);
      }
    }
  };
  walk('src');
  assert.deepEqual(found.sort(), Object.keys(UNBOUNDED_DURATIONS).sort());
});
