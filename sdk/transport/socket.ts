/**
 * A TCP connection as bytes in and bytes out, optionally upgraded to TLS, for the HPC callback's
 * direct NATS link (sdk/callback/direct.ts), which speaks the few protocol lines it needs itself
 * so that a batch job's last step does not pay for evaluating nats.js (docs/hpc-callback.md,
 * "Start-up"). node:tls is imported on first use: it costs ~5 ms to load and most links are plain.
 */
import { readFileSync } from "node:fs";
import { connect as netConnect, isIP, type Socket } from "node:net";

/** Where the TLS material is (PEM files); no CA file means the system's trusted CAs. */
export interface TlsFiles {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** Where a connection's bytes and its end go; given to {@link dialTcp} so nothing arrives unheard. */
export interface SocketListener {
  data(chunk: Uint8Array): void;
  /** Called once, with the socket error if there was one. */
  close(err?: Error): void;
}

/** One connection, plain or upgraded to TLS; what it receives goes to its {@link SocketListener}. */
export interface ByteSocket {
  write(data: Uint8Array): void;
  /** Upgrades the connection to TLS in place (NATS servers ask for it in their INFO line). */
  startTls(tls: TlsFiles): Promise<void>;
  /**
   * Closes the connection at once. Callers close only after the server answered everything that
   * matters (a PONG or an acknowledgement). Not a half-close, and unref'd first: Deno's node:net
   * kept some processes alive after end() and, now and then, after destroy() alone.
   */
  end(): void;
}

/**
 * Connects to host:port; rejects on a refused connection or after `timeoutMs`. The listener is
 * attached before the promise resolves: Deno can deliver the server's first line that early.
 */
export function dialTcp(host: string, port: number, timeoutMs: number, listener: SocketListener): Promise<ByteSocket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    const refused = (err: Error) => {
      clearTimeout(timer);
      reject(new Error((err as { code?: string }).code === "ECONNREFUSED" ? "connection refused" : err.message));
    };
    socket.once("error", refused);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.off("error", refused);
      socket.setNoDelay(true);
      resolve(new Connection(socket, host, timeoutMs, listener));
    });
  });
}

/** The socket in use (the TCP one, then the TLS one over it), feeding one listener. */
class Connection implements ByteSocket {
  #socket: Socket;
  #failure: Error | undefined;
  #closed = false;

  constructor(
    socket: Socket,
    private readonly host: string,
    private readonly timeoutMs: number,
    private readonly listener: SocketListener,
  ) {
    this.#socket = socket;
    this.#attach(socket);
  }

  write(data: Uint8Array): void {
    this.#socket.write(data);
  }

  end(): void {
    this.#socket.unref();
    this.#socket.destroy();
  }

  async startTls(files: TlsFiles): Promise<void> {
    const { connect: tlsConnect } = await import("node:tls");
    const plain = this.#socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("close");
    plain.removeAllListeners("error");
    plain.on("error", () => {}); // the TLS socket reports what matters
    const secure = tlsConnect({
      socket: plain,
      ...(isIP(this.host) ? {} : { servername: this.host }),
      ...(files.caFile ? { ca: readFileSync(files.caFile) } : {}),
      ...(files.certFile ? { cert: readFileSync(files.certFile) } : {}),
      ...(files.keyFile ? { key: readFileSync(files.keyFile) } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        secure.destroy();
        reject(new Error(`no TLS handshake with ${this.host} within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      secure.once("secureConnect", () => (clearTimeout(timer), resolve()));
      secure.once("error", (err) => (clearTimeout(timer), reject(new Error(`TLS handshake with ${this.host} failed: ${err.message}`))));
    });
    this.#socket = secure;
    this.#attach(secure);
  }

  #attach(socket: Socket): void {
    socket.on("data", (chunk: Uint8Array) => this.listener.data(chunk));
    socket.on("error", (err) => (this.#failure = err));
    socket.once("close", () => {
      if (this.#closed) return;
      this.#closed = true;
      this.listener.close(this.#failure);
    });
  }
}
