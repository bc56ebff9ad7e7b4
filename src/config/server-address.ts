/**
 * `host`, `host:port` or `[ipv6]:port`: only what a DNS name or an address can
 * hold, so a mistyped connection string (with `@`, `=`, `/` or a password) is
 * never taken for a host name and echoed.
 */
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.%\w]+)\]|([A-Za-z0-9._-]+))(?::(\d{1,5}))?$/;

/**
 * The one reader of `host[:port]` / `[v6]:port` text (the library's
 * verifyServer target and the CLI). Undefined when `text` is not of that
 * shape or the port is outside 1–65535; `port` is undefined when none is given.
 */
export function parseHostPort(
  text: string,
): { host: string; port: number | undefined } | undefined {
  const match = HOST_PORT.exec(text.trim());
  const host = match?.[1] ?? match?.[2];
  if (match === null || host === undefined) return undefined;
  if (match[3] === undefined) return { host, port: undefined };
  const port = Number(match[3]);
  return port >= 1 && port <= 65_535 ? { host, port } : undefined;
}
