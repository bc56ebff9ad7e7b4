import { RaTlsError } from '../errors.js';
import type { ParsedQuote } from '../evidence/types.js';
import { normalizeHex } from '../util/bytes.js';
import type { MeasurementSet } from './types.js';

/** Boot registers in boot order (docs/protocol.md §2); `rtmr0` alone may be left out of a set. */
const REGISTERS = ['mrtd', 'rtmr0', 'rtmr1', 'rtmr2'] as const;
type Register = (typeof REGISTERS)[number];
const REGISTER_NAMES: Readonly<Record<Register, string>> = {
  mrtd: 'MRTD',
  rtmr0: 'RTMR0',
  rtmr1: 'RTMR1',
  rtmr2: 'RTMR2',
};
const WHAT_IT_MEASURES: Readonly<Record<Register, string>> = {
  mrtd: 'the firmware',
  rtmr0: 'the firmware configuration (VM shape)',
  rtmr1: 'the kernel',
  rtmr2: 'the kernel command line and initrd',
};
const OPTION = 'policy.allowedMeasurements';
const MEASUREMENT_HEX_DIGITS = 96;

/**
 * Validates `policy.allowedMeasurements`: a non-empty array of
 * `{ mrtd, rtmr0?, rtmr1, rtmr2 }`, 48-byte hex each (case, `0x` and
 * whitespace tolerated). Undefined means "not pinned"; an empty array is
 * BAD_CONFIG, because a careless `[]` must not read as a pin that accepts
 * everything. Unknown keys are refused, so a typo (`rtrm1`) cannot drop a
 * register from the check. Duplicates are removed; the result is frozen.
 */
export function normalizeMeasurementSets(value: unknown): readonly MeasurementSet[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value) || value.length === 0) {
    throw badConfig(
      OPTION,
      'must be a non-empty array of { mrtd, rtmr0?, rtmr1, rtmr2 } (omit the option to leave the boot chain unpinned)',
    );
  }
  const seen = new Map<string, MeasurementSet>();
  value.forEach((item: unknown, i) => {
    const option = `${OPTION}[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      throw badConfig(option, 'must be an object { mrtd, rtmr0?, rtmr1, rtmr2 }');
    }
    const record = item as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      if (!(REGISTERS as readonly string[]).includes(key)) {
        throw badConfig(
          `${option}.${key}`,
          `is not a boot register (expected ${REGISTERS.join(', ')})`,
        );
      }
    }
    const set: Partial<Record<Register, string>> = {};
    for (const register of REGISTERS) {
      const raw = record[register];
      if (raw === undefined && register === 'rtmr0') continue;
      const hex = typeof raw === 'string' ? normalizeHex(raw) : undefined;
      if (hex === undefined || hex.length !== MEASUREMENT_HEX_DIGITS) {
        throw badConfig(
          `${option}.${register}`,
          `must be 48 bytes of hex (96 hex digits, 0x optional), got ${raw === undefined ? 'nothing' : describe(raw)}${register === 'rtmr0' ? '' : '; only rtmr0 may be left out'}`,
        );
      }
      set[register] = hex;
    }
    const normalized = Object.freeze(set as MeasurementSet);
    seen.set(REGISTERS.map((register) => set[register] ?? '*').join(':'), normalized);
  });
  return Object.freeze([...seen.values()]);
}

/**
 * Passes when one set matches every register it names (docs/protocol.md §2). Throws
 * MEASUREMENT_NOT_ALLOWED naming the register in which the closest set (the one
 * matching the longest prefix of the boot chain) differs, with the server's
 * value, so an operator sees whether firmware, VM shape, kernel or initrd moved.
 */
export function checkMeasurements(quote: ParsedQuote, sets: readonly MeasurementSet[]): void {
  if (sets.length === 0) return;
  let closest: { index: number; register: Register } | undefined;
  for (const [index, set] of sets.entries()) {
    const differing = REGISTERS.find(
      (register) => set[register] !== undefined && set[register] !== quote[register],
    );
    if (differing === undefined) return;
    if (closest === undefined || REGISTERS.indexOf(differing) > REGISTERS.indexOf(closest.register))
      closest = { index, register: differing };
  }
  const { index, register } = closest!;
  const name = REGISTER_NAMES[register];
  throw new RaTlsError(
    'MEASUREMENT_NOT_ALLOWED',
    `${name} ${quote[register]} (${WHAT_IT_MEASURES[register]}) differs from ${OPTION}` +
      `${sets.length === 1 ? '' : ` (closest set #${index})`}, which expects ${sets[index]![register]}: ` +
      'the server booted another boot chain than the ones you pinned. Add its measurements there only if you built or audited that image.',
    {
      details: {
        register: name,
        setIndex: index,
        mrtd: quote.mrtd,
        rtmr0: quote.rtmr0,
        rtmr1: quote.rtmr1,
        rtmr2: quote.rtmr2,
      },
    },
  );
}

function describe(value: unknown): string {
  if (typeof value === 'string')
    return JSON.stringify(value.length > 120 ? `${value.slice(0, 120)}…` : value);
  return typeof value;
}

function badConfig(option: string, reason: string): RaTlsError {
  return new RaTlsError('BAD_CONFIG', `${option} ${reason}.`, { details: { option } });
}
