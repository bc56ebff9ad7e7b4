// Imports one specifier in this fresh process and prints every package whose
// files were loaded, through import (resolve hook) or require (require.cache).
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';

const { port1, port2 } = new MessageChannel();
const resolved = new Set();
const sentinel = 'data:text/javascript,export default "last"';
const flushed = new Promise((resolve) => {
  port1.on('message', (url) => (url === sentinel ? resolve() : resolved.add(url)));
});
const hooks =
  'let port; export function initialize(data) { port = data.port; }' +
  'export async function resolve(specifier, context, next) {' +
  '  const result = await next(specifier, context); port.postMessage(result.url); return result; }';
register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
  data: { port: port2 },
  transferList: [port2],
});
await import(process.argv[2]);
// The hooks run on another thread and messages keep their order: once the
// sentinel's resolution arrives, every earlier one has.
await import(sentinel);
await flushed;
port1.close();
const files = [...resolved, ...Object.keys(createRequire(import.meta.url).cache)];
const packages = new Set();
for (const file of files) {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
  if (match) packages.add(match[1]);
}
console.log(JSON.stringify([...packages].sort()));
