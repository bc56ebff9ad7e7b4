import type * as Asn1Schema from '@peculiar/asn1-schema';
import type * as Asn1X509 from '@peculiar/asn1-x509';
import { lazyRequire } from './lazy-require.js';

/** `@peculiar/asn1-schema`, loaded at the first certificate or CRL parsed (see lazyRequire). */
export const asn1Schema = lazyRequire<typeof Asn1Schema>('@peculiar/asn1-schema');

/** `@peculiar/asn1-x509`, loaded at the first certificate or CRL parsed (see lazyRequire). */
export const asn1X509 = lazyRequire<typeof Asn1X509>('@peculiar/asn1-x509');
