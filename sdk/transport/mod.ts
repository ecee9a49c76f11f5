/**
 * The runtime edge of the client and worker: sockets, files, environment, host identity and
 * signals. Everything else in sdk/ is runtime-neutral; this folder is what Node, Deno and Bun share
 * through their `node:` compatibility (measured: @nats-io/transport-node runs unmodified on all three).
 * The parts live in separate files so a bundle that needs only some of them (the HPC callback)
 * does not evaluate the others: package.json declares the sources free of side effects.
 * @module
 */
export { environment, hostIdentity, onTerminationSignals, processMemory, readTextFile } from "./system.ts";
export { connectionOptions, openConnection } from "./nats.ts";
export { framesSupported, publishFrame } from "./frames.ts";
export { dialTcp, type ByteSocket, type SocketListener, type TlsFiles } from "./socket.ts";
