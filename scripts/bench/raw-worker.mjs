// A worker written directly on nats.js, without Celerity: the floor the reference rows
// ("f. reference: raw nats.js") compare Celerity with. Plain JS, no build step.
//
//   node raw-worker.mjs --servers URL --stream S --consumer C --prefetch P [--store SUBJECT_PREFIX]
//
// - Answers core requests on `raw.echo` (core request/reply floor).
// - Pulls from the durable consumer C of stream S with exactly P messages held at once (credits are
//   returned when a message is acked, as Celerity's QueuePuller does).
// - For each message: publishes its body to the subject in its `Raw-Reply` header (if any), then,
//   with --store, publishes a result to `<prefix>.<Nats-Msg-Id>` and waits for that PubAck (one
//   wildcard inbox for all PubAcks, no promise or timer per message) before acking the task.
// Writes BENCH_READY_FILE once its first pull has reached the server. Stops on SIGTERM.
import { writeFileSync } from "node:fs";
import process from "node:process";
import { connect } from "@nats-io/transport-node";
import { createInbox } from "@nats-io/nats-core";

const argv = process.argv.slice(2);
const arg = (k, d) => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? argv[i + 1] : d;
};
const stream = arg("stream", "RAW_TASKS");
const consumer = arg("consumer", "raw");
const prefetch = Number(arg("prefetch", "1"));
const store = arg("store");
const ACK = new TextEncoder().encode("+ACK");

const nc = await connect({ servers: arg("servers"), name: "raw-worker" });
nc.subscribe("raw.echo", { callback: (_e, m) => m.respond(m.data) });

// PubAcks of stored results, matched by key on one wildcard inbox.
const ackPrefix = createInbox();
const waiting = new Map();
let seq = 0;
nc.subscribe(`${ackPrefix}.*`, {
  callback: (_e, m) => {
    const key = m.subject.slice(ackPrefix.length + 1);
    const done = waiting.get(key);
    if (done) {
      waiting.delete(key);
      done();
    }
  },
});

let held = 0;
let requested = 0;
const pullInbox = createInbox();
function pull() {
  const free = prefetch - held - requested;
  if (free <= 0) return;
  if (requested > 0 && free < Math.max(1, Math.floor(prefetch / 4))) return;
  requested += free;
  nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, JSON.stringify({ batch: free, expires: 30e9 }), { reply: pullInbox });
}
function finish(m) {
  m.respond(ACK);
  held--;
  pull();
}
nc.subscribe(pullInbox, {
  callback: (_e, m) => {
    const code = m.headers?.code ?? 0;
    if (code !== 0 || !m.reply) {
      // 404/408: the pull ended; the pending header says how many were not delivered.
      const pending = Number(m.headers?.get("Nats-Pending-Messages") ?? NaN);
      requested = Number.isFinite(pending) ? Math.max(0, requested - pending) : 0;
      pull();
      return;
    }
    requested = Math.max(0, requested - 1);
    held++;
    const replyTo = m.headers?.get("Raw-Reply");
    if (replyTo) nc.publish(replyTo, m.data);
    if (store) {
      const key = (++seq).toString(36);
      waiting.set(key, () => finish(m));
      nc.publish(`${store}.${m.headers?.get("Nats-Msg-Id") ?? key}`, m.data, { reply: `${ackPrefix}.${key}` });
    } else {
      finish(m);
    }
  },
});
pull();
await nc.flush();
if (process.env.BENCH_READY_FILE) writeFileSync(process.env.BENCH_READY_FILE, String(process.pid));

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    nc.close().finally(() => process.exit(0));
  });
}
