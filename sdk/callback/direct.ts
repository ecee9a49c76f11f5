/**
 * The callback's own NATS connection: the handful of protocol lines a one-shot report needs
 * (INFO, CONNECT, PING/PONG, SUB, PUB/HPUB with a reply subject, MSG/HMSG for the answer), as
 * described in https://docs.nats.io/reference/reference-protocols/nats-protocol.
 *
 * Why not nats.js here: a batch job's last step is judged by its start-up time (issue 7: time above
 * `node -e 0` to an acknowledged publish). Evaluating nats.js and running its connect path was
 * about 30 ms of the callback's 55 (docs/hpc-callback.md, "Start-up"); this file is evaluated in
 * well under a millisecond. It covers TCP and TLS (upgraded after INFO as nats-server 2.9 asks, or
 * TLS first), with user/password, token, nkey and creds logins. A caller that passes its own
 * nats.js connection goes through nats.js (over_nats.ts).
 */
import { dialTcp, type ByteSocket, type TlsFiles } from "../transport/mod.ts";

/** TLS wishes of the settings: files, and whether to shake hands before the server's INFO. */
export interface DirectTls extends TlsFiles {
  handshakeFirst?: boolean;
}

/** An answer on the inbox: the NATS status (0 for a plain message, 503 for "no responders") and payload. */
export interface Reply {
  status: number;
  data: Uint8Array;
}

/** What to log in with; `sign` answers the server's nonce for nkey and creds logins. */
export interface DirectLogin {
  name?: string;
  user?: string;
  pass?: string;
  token?: string;
  sign?: (nonce: string) => Promise<{ nkey: string; sig: string; jwt?: string }>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const EMPTY: Uint8Array = new Uint8Array(0);
const CRLF = encoder.encode("\r\n");

interface Waiter {
  resolve: (value: never) => void;
  reject: (err: Error) => void;
}

/** One connection to one server; see the module comment. */
export class DirectLink {
  #socket!: ByteSocket;
  readonly #inbox = `_INBOX.${crypto.randomUUID().replaceAll("-", "")}`;
  readonly #replies = new Map<string, { resolve: (r: Reply) => void; reject: (err: Error) => void }>();
  #pongs: Waiter[] = [];
  /** The server's INFO line, the first thing it sends. */
  readonly #info: Promise<Record<string, unknown>>;
  #gotInfo!: (info: Record<string, unknown>) => void;
  #noInfo!: (err: Error) => void;
  #buffer: Uint8Array = EMPTY;
  #seq = 0;
  #serverError: string | undefined;
  #closed: Error | undefined;

  private constructor() {
    this.#info = new Promise((resolve, reject) => {
      this.#gotInfo = resolve;
      this.#noInfo = reject;
    });
    this.#info.catch(() => {}); // read by open(); a failure before then is reported there
  }

  /**
   * Connects to `url` (nats://[user:pass@]host[:port], tls:// for TLS), logs in and subscribes to
   * its inbox. Rejects with the server's own message (e.g. "Authorization Violation") when it
   * refuses the login.
   */
  static async open(url: string, login: DirectLogin, timeoutMs: number, tls?: DirectTls): Promise<DirectLink> {
    const server = parseServer(url);
    const link = new DirectLink();
    const socket = await dialTcp(server.host, server.port, timeoutMs, { data: (chunk) => link.#onData(chunk), close: (err) => link.#onClose(err) });
    link.#socket = socket;
    const timer = setTimeout(() => link.#fail(new Error(`no answer from ${server.host}:${server.port} within ${timeoutMs} ms`)), timeoutMs);
    try {
      let secured = false;
      if (tls?.handshakeFirst) {
        await socket.startTls(tls);
        secured = true;
      }
      const info = await link.#info;
      // TLS when the server requires it (with the system's CAs unless files are given) or we do.
      if (!secured && (info.tls_required === true || tls || server.tls)) await socket.startTls(tls ?? {});
      const connect: Record<string, unknown> = {
        verbose: false,
        pedantic: false,
        lang: "celerity-callback",
        version: "1",
        protocol: 1,
        headers: true,
        no_responders: true,
      };
      if (login.name) connect.name = login.name;
      const user = server.user ?? login.user;
      const pass = server.pass ?? login.pass;
      if (user !== undefined) connect.user = user;
      if (pass !== undefined) connect.pass = pass;
      if (login.token !== undefined) connect.auth_token = login.token;
      if (login.sign) Object.assign(connect, await login.sign(typeof info.nonce === "string" ? info.nonce : ""));
      link.#write(encoder.encode(`CONNECT ${JSON.stringify(connect)}\r\nSUB ${link.#inbox}.* 1\r\n`));
      await link.flush(timeoutMs);
      return link;
    } catch (err) {
      link.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Publishes without waiting for anything (flush() confirms the server has it). */
  publish(subject: string, payload: Uint8Array): void {
    this.#write(encoder.encode(`PUB ${subject} ${payload.length}\r\n`), payload, CRLF);
  }

  /** Publishes with a reply subject on this link's inbox and resolves with the first answer. */
  request(subject: string, payload: Uint8Array, headers: Record<string, string> | undefined, timeoutMs: number): Promise<Reply> {
    if (this.#closed) return Promise.reject(this.#closed);
    const reply = `${this.#inbox}.${++this.#seq}`;
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#replies.delete(reply);
        reject(new Error(`no answer on ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#replies.set(reply, {
        resolve: (r) => (clearTimeout(timer), resolve(r)),
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      if (!headers) {
        this.#write(encoder.encode(`PUB ${subject} ${reply} ${payload.length}\r\n`), payload, CRLF);
        return;
      }
      let block = "NATS/1.0\r\n";
      for (const [k, v] of Object.entries(headers)) block += `${k}: ${v}\r\n`;
      const head = encoder.encode(`${block}\r\n`);
      this.#write(encoder.encode(`HPUB ${subject} ${reply} ${head.length} ${head.length + payload.length}\r\n`), head, payload, CRLF);
    });
  }

  /** Resolves once the server has processed everything written before (PING → PONG). */
  flush(timeoutMs: number): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no PONG within ${timeoutMs} ms`)), timeoutMs);
      this.#pongs.push({
        resolve: (() => (clearTimeout(timer), resolve())) as never,
        reject: (err) => (clearTimeout(timer), reject(err)),
      });
      this.#write(encoder.encode("PING\r\n"));
    });
  }

  /** Ends the connection; anything still waiting is rejected (with `reason` when given). */
  close(reason = new Error("connection closed")): void {
    if (this.#closed) return;
    this.#fail(reason);
    this.#socket.end();
  }

  #write(...parts: Uint8Array[]): void {
    if (this.#closed) return;
    if (parts.length === 1) return this.#socket.write(parts[0]!);
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    this.#socket.write(all);
  }

  #onData(chunk: Uint8Array): void {
    let buf = this.#buffer.length === 0 ? chunk : concat(this.#buffer, chunk);
    let pos = 0;
    for (;;) {
      const eol = indexOfCrlf(buf, pos);
      if (eol < 0) break;
      const line = decoder.decode(buf.subarray(pos, eol));
      if (line.startsWith("MSG ") || line.startsWith("HMSG ")) {
        // MSG <subject> <sid> [reply] <bytes> | HMSG <subject> <sid> [reply] <header bytes> <bytes>
        const parts = line.split(" ");
        const total = Number(parts[parts.length - 1]);
        const headerBytes = parts[0] === "HMSG" ? Number(parts[parts.length - 2]) : 0;
        const start = eol + 2;
        if (buf.length < start + total + 2) break; // the payload has not all arrived yet
        const body = buf.subarray(start, start + total);
        const status = headerBytes > 0 ? statusOf(decoder.decode(body.subarray(0, headerBytes))) : 0;
        this.#replies.get(parts[1]!)?.resolve({ status, data: body.slice(headerBytes) });
        this.#replies.delete(parts[1]!);
        pos = start + total + 2;
        continue;
      }
      pos = eol + 2;
      this.#onLine(line);
    }
    buf = pos >= buf.length ? EMPTY : buf.slice(pos);
    this.#buffer = buf;
  }

  #onLine(line: string): void {
    if (line === "PING") this.#write(encoder.encode("PONG\r\n"));
    else if (line === "PONG") (this.#pongs.shift()?.resolve as (() => void) | undefined)?.();
    else if (line.startsWith("INFO ")) {
      this.#gotInfo(JSON.parse(line.slice(5)) as Record<string, unknown>); // later INFOs (cluster updates) change nothing
    } else if (line.startsWith("-ERR")) {
      // e.g. -ERR 'Authorization Violation' or 'Permissions Violation for Publish to …'. The server
      // closes the connection after most of them; a one-shot report has nothing to gain from
      // staying on after any, so every waiter learns the reason now.
      this.#serverError = line.slice(4).trim().replace(/^'|'$/g, "");
      this.close(new Error(this.#serverError));
    }
  }

  #onClose(err: Error | undefined): void {
    this.#fail(new Error(this.#serverError ?? (err ? err.message : "the server closed the connection")));
  }

  #fail(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    this.#noInfo(err);
    for (const w of this.#pongs) w.reject(err);
    this.#pongs = [];
    for (const r of this.#replies.values()) r.reject(err);
    this.#replies.clear();
  }
}

/** nats://[user:pass@]host[:port] (scheme optional, port 4222 by default; tls:// asks for TLS). */
export function parseServer(url: string): { host: string; port: number; tls: boolean; user?: string; pass?: string } {
  const u = new URL(url.includes("://") ? url : `nats://${url}`);
  const out: { host: string; port: number; tls: boolean; user?: string; pass?: string } = {
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port: u.port ? Number(u.port) : 4222,
    tls: u.protocol === "tls:",
  };
  if (u.username) out.user = decodeURIComponent(u.username);
  if (u.password) out.pass = decodeURIComponent(u.password);
  return out;
}

function statusOf(head: string): number {
  const m = /^NATS\/1\.0 (\d{3})/.exec(head);
  return m ? Number(m[1]) : 0;
}

function indexOfCrlf(buf: Uint8Array, from: number): number {
  for (let i = from; i < buf.length - 1; i++) if (buf[i] === 13 && buf[i + 1] === 10) return i;
  return -1;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
