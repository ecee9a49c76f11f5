/**
 * A real JetStream cluster of nats-server processes on loopback, for tests of replication,
 * failover and reconnect that a single server cannot exercise.
 * @module
 */
import { findNatsServer } from "./find_binary.ts";
import { freePorts, monitorGet, NatsServer } from "./nats_server.ts";

/** How a {@link NatsCluster} is configured. */
export interface NatsClusterOptions {
  /** Number of nodes; default 3. */
  size?: number;
  /** Enable JetStream on every node; default true. */
  jetstream?: boolean;
  /** Path of nats-server; default findNatsServer(). */
  binary?: string;
  /** Cluster name; default "celerity-test". */
  name?: string;
  /** How long start() waits for the nodes and the meta leader; default 15000 ms. */
  readyTimeoutMs?: number;
}

interface MetaCluster {
  leader?: string;
  cluster_size?: number;
  replicas?: { name: string; current: boolean; offline?: boolean }[];
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A cluster of {@link NatsServer} nodes routed to each other, JetStream clustered by default.
 *
 * @example
 * ```ts
 * await using cluster = await NatsCluster.start();
 * const nc = await connect({ servers: cluster.urls });
 * await cluster.servers[0]!.kill("SIGKILL");
 * await cluster.servers[0]!.restart(); // rejoins: same ports, config and store
 * ```
 */
export class NatsCluster implements AsyncDisposable {
  /** Every node, in start order; kill or restart one to test failover. */
  readonly servers: NatsServer[];
  /** Client URL of every node. */
  readonly urls: string[];
  readonly #jetstream: boolean;

  private constructor(servers: NatsServer[], jetstream: boolean) {
    this.servers = servers;
    this.urls = servers.map((s) => s.url);
    this.#jetstream = jetstream;
  }

  /**
   * Starts every node and resolves once they are routed together and, with JetStream, agree on a
   * meta leader that sees all peers current, so a stream with one replica per node can be created.
   */
  static async start(opts: NatsClusterOptions = {}): Promise<NatsCluster> {
    const size = opts.size ?? 3;
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`cluster size must be a positive integer, got ${size}`);
    const binary = opts.binary ?? findNatsServer();
    const jetstream = opts.jetstream ?? true;
    const readyTimeoutMs = opts.readyTimeoutMs ?? 15_000;
    for (let attempt = 1; ; attempt++) {
      const ports = await freePorts(size * 3);
      const routes = ports.slice(size * 2);
      const started = await Promise.allSettled(
        Array.from({ length: size }, (_, i) =>
          NatsServer.start({
            binary,
            jetstream,
            port: ports[i]!,
            monitorPort: ports[size + i]!,
            cluster: { name: opts.name ?? "celerity-test", port: routes[i]!, routes },
          })),
      );
      const servers = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const failure = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
      const cluster = new NatsCluster(servers, jetstream);
      if (failure) {
        await cluster.stop();
        // Fixed ports are not retried inside NatsServer.start, so a port taken meanwhile lands here.
        const reason = failure.reason as Error;
        if (reason?.name === "AddressInUseError" && attempt < 3) continue;
        throw reason;
      }
      try {
        await cluster.waitForMetaLeader(readyTimeoutMs);
      } catch (err) {
        await cluster.stop();
        throw err;
      }
      return cluster;
    }
  }

  /**
   * Waits until every running node is routed to all other running nodes and, with JetStream, they
   * agree on a meta leader that reports its followers current and every node's /healthz is 200.
   * Resolves with the leader's server name ("" without JetStream).
   */
  async waitForMetaLeader(timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let problem = "";
    for (;;) {
      try {
        return await this.#check();
      } catch (err) {
        problem = (err as Error).message;
      }
      if (Date.now() >= deadline) {
        throw new Error(`NATS cluster not ready within ${timeoutMs} ms: ${problem}`);
      }
      await sleep(25);
    }
  }

  async #check(): Promise<string> {
    const running = this.servers.filter((s) => s.running);
    if (running.length === 0) throw new Error("no node is running");
    const routed = await Promise.all(
      running.map(async (s) => {
        const { body } = await monitorGet(s.monitorPort, "/routez");
        const routes = (JSON.parse(body) as { routes?: { remote_id?: string }[] }).routes ?? [];
        return new Set(routes.map((r) => r.remote_id)).size;
      }),
    );
    routed.forEach((n, i) => {
      if (n < running.length - 1) throw new Error(`${running[i]!.serverName} has ${n} routes, wants ${running.length - 1}`);
    });
    if (!this.#jetstream) return "";

    const metas = await Promise.all(
      running.map(async (s) => {
        const { body } = await monitorGet(s.monitorPort, "/jsz");
        return (JSON.parse(body) as { meta_cluster?: MetaCluster }).meta_cluster ?? {};
      }),
    );
    const leader = metas[0]!.leader;
    if (!leader) throw new Error(`${running[0]!.serverName} knows no meta leader`);
    metas.forEach((m, i) => {
      if (m.leader !== leader) throw new Error(`${running[i]!.serverName} sees meta leader ${m.leader}, others ${leader}`);
    });
    // Only the leader lists its followers; they must be current or R<n> placement can still fail.
    const leaderIndex = running.findIndex((s) => s.serverName === leader);
    if (leaderIndex >= 0) {
      const followers = metas[leaderIndex]!.replicas ?? [];
      const current = new Set(followers.filter((r) => r.current && !r.offline).map((r) => r.name));
      for (const s of running) {
        if (s.serverName !== leader && !current.has(s.serverName)) {
          throw new Error(`meta leader ${leader} does not see ${s.serverName} current`);
        }
      }
    }
    await Promise.all(
      running.map(async (s) => {
        const { status, body } = await monitorGet(s.monitorPort, "/healthz");
        if (status !== 200) throw new Error(`${s.serverName} /healthz ${status} ${body.trim()}`);
      }),
    );
    return leader;
  }

  /** Stops every node (in parallel) and removes their temporary stores; idempotent. */
  async stop(): Promise<void> {
    await Promise.all(this.servers.map((s) => s.stop()));
  }

  /** Same as stop(), for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
