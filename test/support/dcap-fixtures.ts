/** The real Intel quotes and collateral of test/fixtures (see fixtures/README.md). */
import { readFileSync } from 'node:fs';
import type { Collateral } from '../../src/verification/collateral.js';

const FIXTURES = new URL('../fixtures/', import.meta.url);

/** A fixture's quote and collateral, by folder name. */
export function fixture(name: string): { quote: Uint8Array; collateral: Collateral } {
  return {
    quote: new Uint8Array(readFileSync(new URL(`${name}/quote.bin`, FIXTURES))),
    collateral: JSON.parse(readFileSync(new URL(`${name}/collateral.json`, FIXTURES), 'utf8')),
  };
}

/** Inside the v4 fixture's collateral window (fixtures/README.md). */
export const V4_NOW = new Date(1751328000 * 1000);
