import { RaTlsError } from '../errors.js';
import { closestName } from './did-you-mean.js';

/**
 * Refuses every own key of `options` that is not in `known` with BAD_CONFIG,
 * naming the key (after `prefix`, e.g. `"policy."`) and, when one is close, the
 * option that was probably meant. A misspelled option would otherwise be
 * ignored silently, and a misspelled security option (`reattesEvery`,
 * `allowedMeasurment`) silently weakens what the caller asked for.
 * Keys whose value is `undefined` are refused too: a typo is a typo.
 */
export function assertKnownOptions(
  options: object,
  known: Iterable<string>,
  where: string,
  prefix = '',
): void {
  const names = known instanceof Set ? (known as ReadonlySet<string>) : new Set(known);
  for (const key of Object.keys(options)) {
    if (names.has(key)) continue;
    const shown = key.length > 64 ? `${key.slice(0, 64)}…` : key;
    const suggestion = closestName(key, names);
    throw new RaTlsError(
      'BAD_CONFIG',
      `${where} has no option ${JSON.stringify(`${prefix}${shown}`)}` +
        (suggestion === undefined
          ? `; its options are ${[...names].sort().join(', ')}`
          : `: did you mean ${JSON.stringify(`${prefix}${suggestion}`)}?`),
      {
        details: {
          option: `${prefix}${shown}`,
          ...(suggestion === undefined ? {} : { suggestion: `${prefix}${suggestion}` }),
        },
      },
    );
  }
}
