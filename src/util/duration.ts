import { RaTlsError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/;

/**
 * Parses a duration option: milliseconds as a number, or a string such as
 * `"250ms"`, `"30s"`, `"5m"`, `"1h"` (a bare number string means ms).
 * `option` names the setting in the error message.
 */
export function parseDuration(value: number | string, option: string): number {
  if (typeof value === 'number') {
    if (Number.isFinite(value) && value >= 0) return value;
  } else {
    const match = DURATION.exec(value.trim());
    if (match) return Math.round(Number(match[1]) * UNITS[match[2] ?? 'ms']!);
  }
  throw new RaTlsError(
    'BAD_CONFIG',
    `${option} must be a non-negative number of milliseconds or a string like "30s" or "5m", got ${JSON.stringify(value)}`,
    { details: { option } },
  );
}

/**
 * Node's timers hold a signed 32-bit number of milliseconds (~24.8 days); a
 * longer delay silently becomes 1 ms, so a generous timeout would fire at once.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Parses a timeout option like {@link parseDuration}, refusing (BAD_CONFIG)
 * values a Node timer cannot hold: longer than ~24.8 days.
 */
export function parseTimeout(value: number | string, option: string): number {
  const ms = parseDuration(value, option);
  if (ms > MAX_TIMER_MS) {
    throw new RaTlsError(
      'BAD_CONFIG',
      `${option} must be at most ${MAX_TIMER_MS} ms (~24.8 days, the longest timer Node can hold), got ${JSON.stringify(value)}`,
      { details: { option } },
    );
  }
  return ms;
}
