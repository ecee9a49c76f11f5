// Cold-start workload (d): connect, send ONE task (resolves on its PubAck), close, exit.
// Timed from outside, whole process, by ../shared/peers/lib/proc.js coldstart.
// Run as is, it imports the built dist/client.js (unbundled: dependencies load from node_modules);
// scripts/bench/common.ts also bundles it with esbuild into one .mjs, the way the HPC callback ships.
// Configured like an application: the server comes from CELERITY_SERVERS. It creates no topology
// (the benchmark creates it beforehand; send() would only create it lazily on a 503).
// With BENCH_PHASES=1 it prints its phases (ms since the process started) as JSON on stderr.
import { connect } from "../../dist/client.js";

const tBody = performance.now(); // node's own start-up + loading and evaluating the imports
const client = await connect({ namespace: "celerity" });
const tConnected = performance.now();
await client.send("bench.noop", { i: 1 });
const tSent = performance.now();
await client.close();
const tClosed = performance.now();
if (process.env.BENCH_PHASES) {
  process.on("exit", () => {
    process.stderr.write(JSON.stringify({ body: tBody, connect: tConnected - tBody, send: tSent - tConnected, close: tClosed - tSent, exit: performance.now() - tClosed }) + "\n");
  });
}
