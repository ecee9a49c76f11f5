/**
 * Repro: a bad task message just under max_payload is never dead-lettered. The dead-letter copy
 * adds the Celerity-Dlq-* headers, goes over max_payload, nats.js refuses it, and the worker naks
 * the message, which comes straight back: an endless, immediate redelivery loop.
 *
 *   node --import tsx scripts/chaos/repro/oversize_dead_letter.ts
 */
import { headers } from "@nats-io/nats-core";
import { encode, HEADER, PROTOCOL_VERSION } from "../../../sdk/protocol/mod.ts";
import { drain, rig, sleep, verdict } from "./common.ts";
import { work } from "../signatures.ts";

const r = await rig((w) => w.implement(work, ({ n }) => ({ n, pid: process.pid })));
try {
  const max = r.client.nc.info!.max_payload;
  const h = headers();
  h.set(HEADER.msgId, "big-bad");
  h.set(HEADER.task, work.name);
  const body = (pad: string) => encode({ v: PROTOCOL_VERSION, id: "big-bad", task: work.name, args: { n: pad }, queue: "default", sentAt: Date.now() });
  const data = body("x".repeat(max - body("").length - 200));
  await r.client.publisher.publish(r.client.names.taskSubject("default"), data, h);
  const left = await drain(r.client, 5000);
  await sleep(100);
  const jsm = await r.client.jsm();
  const dlq = (await jsm.streams.info(r.client.names.dlqStream)).state.messages;
  const first = dlq ? await jsm.streams.getMessage(r.client.names.dlqStream, { seq: 1 }) : undefined;
  const reason = first?.header?.get(HEADER.dlqReason) ?? "-";
  const info = await jsm.consumers.info(r.client.names.tasksStream, r.client.names.queueConsumer("default"));
  verdict(left > 0 || dlq === 0 || reason !== "invalid-args", `message of ${data.length} bytes (max_payload ${max}): after 5 s ${left} left in the work queue, ${dlq} dead letter(s) (reason ${reason}), delivered ${info.delivered.consumer_seq} times, worker stats ${JSON.stringify(r.worker.stats)}`);
} finally {
  await r.close();
}
