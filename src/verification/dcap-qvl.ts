import type * as DcapQvl from '@phala/dcap-qvl';
import { lazyRequire } from '../util/lazy-require.js';

/**
 * `@phala/dcap-qvl` on the main thread (quote certification data, Intel's root
 * CA), loaded at first use: the engines load their own copy in their threads.
 */
export const dcapQvl = lazyRequire<typeof DcapQvl>('@phala/dcap-qvl');
