/**
 * One real nats-server per test, on loopback ports nobody else uses and with throw-away storage, so
 * test files can run in parallel and a crashed test leaves nothing behind.
 * @module
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readSync, rmSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { createServer, connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { findNatsServer } from "./find_binary.ts";

/** How a {@link NatsServer} is configured; everything has a test-friendly default. */
export interface NatsServerOptions {
  /** Client port; default: a free loopback port. */
  port?: number;
  /** JetStream storage; default: a fresh temporary directory removed on stop() unless keepStore. */
  storeDir?: string;
  /** Keep the store on stop(); default false for a generated storeDir, true for a given one. */
  keepStore?: boolean;
  /** Enable JetStream; default true. */
  jetstream?: boolean;
  /** max_payload in bytes; default: the server's own (1 MiB). */
  maxPayload?: number;
  /** Path of nats-server; default findNatsServer(). */
  binary?: string;
  /** Raw nats-server configuration appended to the generated file. */
  extraConfig?: string;
  /** Where the server's stdout/stderr go (appended); default a nats-<port>.log beside the config. */
  logFile?: string;
  /** HTTP monitoring port; default: a free loopback port. */
  monitorPort?: number;
  /** server_name; default n<port>. */
  serverName?: string;
  /** Route this server into a cluster (JetStream clustering also needs a unique serverName). */
  cluster?: NatsServerClusterOptions;
  /** How long start() and restart() wait for the server to answer; default 10000 ms. */
  readyTimeoutMs?: number;
}

/** The cluster block of one node's configuration. */
export interface NatsServerClusterOptions {
  /** Cluster name, the same on every node. */
  name: string;
  /** This node's route listen port. */
  port: number;
  /** Route ports of all nodes (this one may be included; the server ignores a route to itself). */
  routes: number[];
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

const STOP_GRACE_MS = 5000;
const POLL_MS = 25;

// Children still running, so an exiting test process can take them down with it: a leaked
// nats-server would hold its ports and storage long after the run.
const live = new Map<ChildProcess, { dir: string | undefined }>();
let hooksInstalled = false;

function killAllSync(): void {
  for (const [child, { dir }] of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    if (dir) {
      try {
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      } catch {
        // best effort: the process may still be writing while it dies
      }
    }
  }
  live.clear();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", killAllSync);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = (): void => {
      killAllSync();
      // Re-raise only when we are the sole listener: otherwise someone else owns shutdown and
      // our listener must not turn their graceful stop into an abrupt death.
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

/** Returns a loopback TCP port that was free a moment ago (bind 127.0.0.1:0, read, close). */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port!;
}

/**
 * Returns `count` distinct free loopback ports. They are held open together before release, because
 * binding one at a time may hand back the same port twice.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
        const server = createServer();
        server.unref();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => resolve(server));
      })),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === "string") throw new Error("unexpected listen address");
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/** GET on the monitoring port with no keep-alive, so nothing lingers after a server dies. */
export function monitorGet(port: number, path: string, timeoutMs = 1000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpGet({ host: "127.0.0.1", port, path, agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
  });
}

/** Reads the INFO line a NATS server sends on connect: proof that it accepts clients. */
function readInfo(port: number, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: "127.0.0.1", port });
    let buffer = "";
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () => fail(new Error("no INFO line")));
    socket.setEncoding("utf8");
    socket.on("error", fail);
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf("\r\n");
      if (end < 0) return;
      socket.destroy();
      const line = buffer.slice(0, end);
      if (!line.startsWith("INFO ")) return reject(new Error(`unexpected greeting: ${line.slice(0, 80)}`));
      try {
        resolve(JSON.parse(line.slice(5)) as Record<string, unknown>);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last lines of a log file, so a failure message explains itself. */
function logTail(path: string, lines = 25): string {
  try {
    const size = statSync(path).size;
    const length = Math.min(size, 16384);
    const buf = Buffer.alloc(length);
    const fd = openSync(path, "r");
    try {
      readSync(fd, buf, 0, length, size - length);
    } finally {
      closeSync(fd);
    }
    return buf.toString("utf8").split("\n").filter((l) => l.trim() !== "").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

function describeExit(exit: ExitInfo): string {
  if (exit.error) return `failed to run: ${exit.error.message}`;
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

class AddressInUseError extends Error {
  override name = "AddressInUseError";
}

function renderConfig(c: {
  port: number;
  monitorPort: number;
  serverName: string;
  storeDir: string;
  jetstream: boolean;
  maxPayload: number | undefined;
  cluster: NatsServerClusterOptions | undefined;
  extraConfig: string | undefined;
}): string {
  const lines = [
    "# Generated by celerity/testing.",
    `listen: 127.0.0.1:${c.port}`,
    `http: 127.0.0.1:${c.monitorPort}`,
    `server_name: ${JSON.stringify(c.serverName)}`,
  ];
  if (c.maxPayload !== undefined) lines.push(`max_payload: ${c.maxPayload}`);
  if (c.jetstream) lines.push(`jetstream { store_dir: ${JSON.stringify(c.storeDir)} }`);
  if (c.cluster) {
    const routes = c.cluster.routes.map((p) => `nats-route://127.0.0.1:${p}`).join(", ");
    lines.push(
      `cluster { name: ${JSON.stringify(c.cluster.name)}, listen: 127.0.0.1:${c.cluster.port}, routes: [${routes}] }`,
    );
  }
  if (c.extraConfig) lines.push(c.extraConfig);
  return lines.join("\n") + "\n";
}

/**
 * A real nats-server child process on loopback, JetStream on by default.
 *
 * @example
 * ```ts
 * await using server = await NatsServer.start();
 * const nc = await connect({ servers: server.url });
 * ```
 */
export class NatsServer implements AsyncDisposable {
  /** Client URL, nats://127.0.0.1:<port>. */
  readonly url: string;
  /** Client port; the same across restart(). */
  readonly port: number;
  /** HTTP monitoring port (/varz, /jsz, /healthz). */
  readonly monitorPort: number;
  /** JetStream store directory. */
  readonly storeDir: string;
  /** server_name, which is also the name JetStream uses for this peer. */
  readonly serverName: string;
  /** The generated nats-server configuration file. */
  readonly configFile: string;
  /** Where the server's stdout/stderr go. */
  readonly logFile: string;

  readonly #binary: string;
  readonly #workDir: string;
  readonly #storeGiven: boolean;
  readonly #keepStore: boolean;
  readonly #jetstream: boolean;
  readonly #readyTimeoutMs: number;
  #child: ChildProcess | undefined;
  #exit: ExitInfo | undefined;
  #exited: Promise<void> = Promise.resolve();
  #version = "";
  #removed = false;

  private constructor(init: {
    binary: string;
    workDir: string;
    port: number;
    monitorPort: number;
    storeDir: string;
    storeGiven: boolean;
    keepStore: boolean;
    serverName: string;
    configFile: string;
    logFile: string;
    jetstream: boolean;
    readyTimeoutMs: number;
  }) {
    this.#binary = init.binary;
    this.#workDir = init.workDir;
    this.port = init.port;
    this.monitorPort = init.monitorPort;
    this.url = `nats://127.0.0.1:${init.port}`;
    this.storeDir = init.storeDir;
    this.#storeGiven = init.storeGiven;
    this.#keepStore = init.keepStore;
    this.serverName = init.serverName;
    this.configFile = init.configFile;
    this.logFile = init.logFile;
    this.#jetstream = init.jetstream;
    this.#readyTimeoutMs = init.readyTimeoutMs;
  }

  /**
   * Starts a server and resolves once it sends its INFO line and, with JetStream, its
   * /healthz?js-enabled-only=true answers 200; rejects with the log tail if it exits or is not
   * ready within readyTimeoutMs.
   */
  static async start(opts: NatsServerOptions = {}): Promise<NatsServer> {
    const binary = opts.binary ?? findNatsServer();
    const picksPorts = opts.port === undefined || opts.monitorPort === undefined;
    for (let attempt = 1; ; attempt++) {
      // Another process may grab a port between freePorts() and the server's bind: pick again.
      const [freeClient, freeMonitor] = await freePorts(2);
      const server = await NatsServer.#prepare(binary, opts, opts.port ?? freeClient!, opts.monitorPort ?? freeMonitor!);
      try {
        await server.#launch();
        return server;
      } catch (err) {
        await server.#discard();
        if (err instanceof AddressInUseError && picksPorts && attempt < 3) continue;
        throw err;
      }
    }
  }

  static async #prepare(binary: string, opts: NatsServerOptions, port: number, monitorPort: number): Promise<NatsServer> {
    const workDir = await mkdtemp(join(tmpdir(), "celerity-nats-"));
    const storeGiven = opts.storeDir !== undefined;
    const storeDir = opts.storeDir ?? join(workDir, "store");
    await mkdir(storeDir, { recursive: true });
    const serverName = opts.serverName ?? `n${port}`;
    const configFile = join(workDir, "nats.conf");
    await writeFile(
      configFile,
      renderConfig({
        port,
        monitorPort,
        serverName,
        storeDir,
        jetstream: opts.jetstream ?? true,
        maxPayload: opts.maxPayload,
        cluster: opts.cluster,
        extraConfig: opts.extraConfig,
      }),
    );
    return new NatsServer({
      binary,
      workDir,
      port,
      monitorPort,
      storeDir,
      storeGiven,
      keepStore: opts.keepStore ?? storeGiven,
      serverName,
      configFile,
      logFile: opts.logFile ?? join(workDir, `nats-${port}.log`),
      jetstream: opts.jetstream ?? true,
      readyTimeoutMs: opts.readyTimeoutMs ?? 10_000,
    });
  }

  /** Process id while the server runs, undefined once it has exited. */
  get pid(): number | undefined {
    return this.#exit ? undefined : this.#child?.pid;
  }

  /** Whether the process is running. */
  get running(): boolean {
    return this.#child !== undefined && this.#exit === undefined;
  }

  /** Server version as announced in its INFO line, e.g. "2.9.10". */
  get version(): string {
    return this.#version;
  }

  /** URL of the HTTP monitoring endpoint, http://127.0.0.1:<monitorPort>. */
  get monitorUrl(): string {
    return `http://127.0.0.1:${this.monitorPort}`;
  }

  async #launch(): Promise<void> {
    installExitHooks();
    const fd = openSync(this.logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn(this.#binary, ["-c", this.configFile], { stdio: ["ignore", fd, fd], detached: false });
    } finally {
      // The child holds its own copy of the descriptor.
      closeSync(fd);
    }
    this.#child = child;
    this.#exit = undefined;
    live.set(child, { dir: this.#workDirDisposable ? this.#workDir : undefined });
    this.#exited = new Promise<void>((resolve) => {
      const done = (exit: ExitInfo): void => {
        if (this.#child === child && this.#exit === undefined) this.#exit = exit;
        live.delete(child);
        resolve();
      };
      child.once("exit", (code, signal) => done({ code, signal }));
      child.once("error", (error) => done({ code: null, signal: null, error }));
    });
    // A server the test forgot to stop must not keep the runner alive; the exit hook kills it.
    child.unref();
    await this.#waitReady();
  }

  async #waitReady(): Promise<void> {
    const deadline = Date.now() + this.#readyTimeoutMs;
    const exited = this.#exited;
    let lastProblem = "";
    for (;;) {
      if (this.#exit) {
        const tail = logTail(this.logFile);
        const message = `nats-server on port ${this.port} ${describeExit(this.#exit)} before it was ready; log ${this.logFile}:\n${tail}`;
        throw /address already in use/i.test(tail) ? new AddressInUseError(message) : new Error(message);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        const tail = logTail(this.logFile);
        throw new Error(
          `nats-server on port ${this.port} was not ready within ${this.#readyTimeoutMs} ms (${lastProblem}); log ${this.logFile}:\n${tail}`,
        );
      }
      try {
        const info = await readInfo(this.port, Math.min(remaining, 1000));
        if (this.#jetstream) {
          const health = await monitorGet(this.monitorPort, "/healthz?js-enabled-only=true", Math.min(remaining, 1000));
          if (health.status !== 200) throw new Error(`healthz ${health.status} ${health.body.trim()}`);
        }
        this.#version = String(info.version ?? "");
        return;
      } catch (err) {
        lastProblem = (err as Error).message;
      }
      await Promise.race([sleep(POLL_MS), exited]);
    }
  }

  async #terminate(signal: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (!child || this.#exit) return;
    // Waiting for the exit event needs a referenced handle, or Node may exit mid-await.
    child.ref();
    child.kill(signal);
    // A SIGSTOPped server cannot act on SIGTERM until it runs again.
    if (signal !== "SIGKILL") child.kill("SIGCONT");
    const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
    try {
      await this.#exited;
    } finally {
      clearTimeout(timer);
    }
  }

  async #discard(): Promise<void> {
    await this.#terminate("SIGKILL");
    await this.#removeFiles(true);
  }

  /** The work dir (config, default log) is ours to delete unless it holds a generated store to keep. */
  get #workDirDisposable(): boolean {
    return this.#storeGiven || !this.#keepStore;
  }

  async #removeFiles(failedStart: boolean): Promise<void> {
    if (this.#removed) return;
    if (!failedStart && !this.#workDirDisposable) return;
    this.#removed = true;
    if (this.#storeGiven && !this.#keepStore) await rm(this.storeDir, { recursive: true, force: true });
    await rm(this.#workDir, { recursive: true, force: true, maxRetries: 3 });
  }

  /** Stops with SIGTERM (SIGKILL after 5 s) and removes the temporary store unless kept; idempotent. */
  async stop(): Promise<void> {
    await this.#terminate("SIGTERM");
    await this.#removeFiles(false);
  }

  /** Sends `signal` (default SIGTERM) and waits for exit, SIGKILL after 5 s; keeps the store for restart(). */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    await this.#terminate(signal);
  }

  /** Stops (keeping the store) if running, then starts again with the same ports, config and store. */
  async restart(): Promise<void> {
    if (this.#removed) {
      throw new Error(`nats-server on port ${this.port} was stopped and its config removed; start a new one (same storeDir to keep data)`);
    }
    await this.#terminate("SIGTERM");
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#launch();
        return;
      } catch (err) {
        await this.#terminate("SIGKILL");
        // Our port may briefly be someone's ephemeral port; it is ours again once they let go.
        if (err instanceof AddressInUseError && attempt < 5) {
          await sleep(200 * attempt);
          continue;
        }
        throw err;
      }
    }
  }

  /** Same as stop(), for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
