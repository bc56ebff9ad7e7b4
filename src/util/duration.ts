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
