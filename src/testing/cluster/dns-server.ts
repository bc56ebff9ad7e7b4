/**
 * A loopback DNS server answering TXT queries from a table, over UDP and TCP
 * (RFC 1035 §4.2; a resolver retries over TCP when a UDP answer is
 * truncated), with faults for tests: down, silent (black hole), slow.
 * Packets are built and parsed by dns-packet.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import { closeServer, listen } from '../stack/net-utils.js';

/** One TXT record: its text (split into 255-byte character strings) or explicit chunks. */
export type TxtRecord = string | readonly string[];

/** How the server misbehaves. */
export type DnsFault =
  /** Answers normally. */
  | 'none'
  /** Answers every query with SERVFAIL. */
  | 'servfail'
  /** Reads queries and never answers (a black hole). */
  | 'silent';

/** Options of {@link startDnsServer}. */
export interface DnsServerOptions {
  /** TXT records by query name (case-insensitive, no trailing dot). */
  readonly records?: Readonly<Record<string, readonly TxtRecord[]>>;
  /** Port for both UDP and TCP. Default: a free one. */
  readonly port?: number;
}

/** A running DNS server; see {@link startDnsServer}. */
export interface DnsServer {
  readonly host: string;
  readonly port: number;
  /** `127.0.0.1:<port>`, for `resolver: [dns.address]`. */
  readonly address: string;
  /** Replaces the TXT records of `name` (an empty list removes them). */
  setTxt(name: string, records: readonly TxtRecord[]): void;
  /** Sets the fault mode for queries from now on. */
  setFault(fault: DnsFault): void;
  /** Delays every answer by `ms` from now on (0 to stop). */
  setDelay(ms: number): void;
  /** Queries received so far (UDP and TCP). */
  readonly queries: number;
  /** Stops both listeners and cancels delayed answers. Idempotent. */
  close(): Promise<void>;
}

const TTL_SECONDS = 5;
const MAX_CHUNK = 255;

/** Starts a DNS server on 127.0.0.1 serving `records`. */
export async function startDnsServer(options: DnsServerOptions = {}): Promise<DnsServer> {
  const host = '127.0.0.1';
  const records = new Map<string, readonly TxtRecord[]>();
  for (const [name, list] of Object.entries(options.records ?? {})) records.set(key(name), list);
  let fault: DnsFault = 'none';
  let delayMs = 0;
  let queries = 0;
  const timers = new Set<NodeJS.Timeout>();
  const sockets = new Set<Socket>();

  const answer = (query: Buffer, maxUdp: number | undefined): Buffer | undefined => {
    queries++;
    let packet: dnsPacket.DecodedPacket;
    try {
      packet = dnsPacket.decode(query);
    } catch {
      return undefined;
    }
    if (fault === 'silent') return undefined;
    const question = packet.questions?.[0];
    const base = {
      type: 'response' as const,
      id: packet.id ?? 0,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | ((packet.flags ?? 0) & dnsPacket.RECURSION_DESIRED),
      questions: packet.questions ?? [],
    };
    if (fault === 'servfail' || question === undefined) {
      // SERVFAIL (rcode 2).
      return dnsPacket.encode({ ...base, flags: base.flags | 2 });
    }
    const found = question.type === 'TXT' ? records.get(key(question.name)) : undefined;
    const response: dnsPacket.Packet = {
      ...base,
      // NXDOMAIN (rcode 3) when nothing at all is known of the name.
      flags: base.flags | (records.has(key(question.name)) ? 0 : 3),
      answers: (found ?? []).map((record) => ({
        type: 'TXT' as const,
        class: 'IN' as const,
        name: question.name,
        ttl: TTL_SECONDS,
        data: chunks(record),
      })),
    };
    const encoded = dnsPacket.encode(response);
    if (maxUdp !== undefined && encoded.byteLength > maxUdp) {
      // Truncated (TC): the resolver asks again over TCP.
      return dnsPacket.encode({ ...base, flags: base.flags | dnsPacket.TRUNCATED_RESPONSE });
    }
    return encoded;
  };

  const later = (send: () => void) => {
    if (delayMs <= 0) {
      send();
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      send();
    }, delayMs);
    timers.add(timer);
  };

  const udp: UdpSocket = createSocket('udp4');
  udp.on('message', (message, remote) => {
    const reply = answer(message, 512);
    if (reply !== undefined) later(() => udp.send(reply, remote.port, remote.address));
  });
  const tcp: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buffered = Buffer.alloc(0);
    socket.on('data', (data) => {
      buffered = Buffer.concat([buffered, data]);
      while (buffered.byteLength >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.byteLength < 2 + length) break;
        const query = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        const reply = answer(query, undefined);
        if (reply !== undefined) {
          const framed = Buffer.alloc(2 + reply.byteLength);
          framed.writeUInt16BE(reply.byteLength, 0);
          reply.copy(framed, 2);
          later(() => {
            if (!socket.destroyed) socket.write(framed);
          });
        }
      }
    });
  });

  let port = options.port ?? 0;
  await listen(tcp, port, host);
  port = (tcp.address() as { port: number }).port;
  try {
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    await closeServer(tcp);
    throw error;
  }

  let closing: Promise<void> | undefined;
  return {
    host,
    port,
    address: `${host}:${port}`,
    setTxt: (name, list) => {
      if (list.length === 0) records.delete(key(name));
      else records.set(key(name), list);
    },
    setFault: (next) => {
      fault = next;
    },
    setDelay: (ms) => {
      delayMs = ms;
    },
    get queries() {
      return queries;
    },
    close: () => {
      closing ??= (async () => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        for (const socket of sockets) socket.destroy();
        await Promise.all([
          closeServer(tcp),
          new Promise<void>((resolve) => udp.close(() => resolve())),
        ]);
      })();
      return closing;
    },
  };
}

function key(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/** A record's character strings: explicit chunks, or the text cut into 255-byte pieces. */
function chunks(record: TxtRecord): string[] {
  if (typeof record !== 'string') return [...record];
  const out: string[] = [];
  for (let at = 0; at < record.length; at += MAX_CHUNK) out.push(record.slice(at, at + MAX_CHUNK));
  return out.length === 0 ? [''] : out;
}
