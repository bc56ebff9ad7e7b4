// A CommonJS user: require() every subpath the package exports.
const subpaths = [
  'pg-ra-tls',
  'pg-ra-tls/testing',
  'pg-ra-tls/kysely',
  'pg-ra-tls/pg',
  'pg-ra-tls/drizzle',
  'pg-ra-tls/prisma',
  'pg-ra-tls/postgres-js',
  'pg-ra-tls/slonik',
];
const out = {};
for (const subpath of subpaths) out[subpath] = Object.keys(require(subpath)).sort();
console.log(JSON.stringify(out));
