// Diagnostic floor for the cold-start workload (d): the same one-off job written directly on nats.js,
// without Celerity: connect, publish ONE message to the tasks stream and wait for its PubAck, close.
// Bundled by scripts/bench/common.ts like oneshot.mjs. BENCH_PHASES=1 prints its phases on stderr.
import { connect } from "@nats-io/transport-node";
import { headers } from "@nats-io/nats-core";

const tBody = performance.now();
const nc = await connect({ servers: process.env.CELERITY_SERVERS });
const tConnected = performance.now();
const h = headers();
h.set("Nats-Msg-Id", crypto.randomUUID());
const ack = JSON.parse(new TextDecoder().decode((await nc.request("celerity.tasks.default.0", new Uint8Array(150), { headers: h, timeout: 5000 })).data));
if (ack.error) throw new Error(JSON.stringify(ack.error));
const tSent = performance.now();
await nc.close();
const tClosed = performance.now();
if (process.env.BENCH_PHASES) {
  process.on("exit", () => {
    process.stderr.write(JSON.stringify({ body: tBody, connect: tConnected - tBody, send: tSent - tConnected, close: tClosed - tSent, exit: performance.now() - tClosed }) + "\n");
  });
}
