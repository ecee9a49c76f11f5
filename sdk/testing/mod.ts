/**
 * Real nats-server processes for tests: one node or a JetStream cluster, on free loopback ports with
 * throw-away storage. No NATS mocks anywhere: what passes here passes against a real server.
 * Needs the nats-server binary (`sudo apt-get install -y nats-server`, or NATS_SERVER=/path).
 *
 * @example
 * ```ts
 * import { NatsServer, NatsCluster } from "celerity/testing";
 * import { connect } from "@nats-io/transport-node";
 *
 * await using server = await NatsServer.start();
 * const nc = await connect({ servers: server.url });
 * await nc.close();
 *
 * await using cluster = await NatsCluster.start(); // 3 nodes, meta leader elected
 * await cluster.servers[1]!.kill("SIGKILL");
 * await cluster.servers[1]!.restart();
 * ```
 * @module
 */
export { findNatsServer, NatsServerNotFoundError } from "./find_binary.ts";
export { freePort, freePorts, NatsServer, type NatsServerClusterOptions, type NatsServerOptions } from "./nats_server.ts";
export { NatsCluster, type NatsClusterOptions } from "./nats_cluster.ts";
