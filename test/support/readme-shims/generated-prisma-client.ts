/**
 * A stand-in for the client `prisma generate` writes (`./generated/prisma/client.js`
 * in the README), for type-checking the README's Prisma block only: no
 * Prisma CLI or generated client is installed here. It declares the part of
 * Prisma 7's generated `PrismaClient` the README uses; the adapter type is
 * Prisma's own driver-adapter interface, so the check is whether our adapter
 * fits what Prisma accepts.
 */
import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';

/** The generated client's shape as far as the README uses it; type-only, never run. */
export declare class PrismaClient {
  constructor(options: { readonly adapter: SqlDriverAdapterFactory });
  $queryRaw<T = unknown>(query: TemplateStringsArray, ...values: unknown[]): Promise<T>;
  $disconnect(): Promise<void>;
}
