/**
 * Moves tasks whose ETA has come from the scheduled stream to their queue.
 *
 * nats-server 2.9 has no message scheduling, and a task held back with `-NAK {delay}` on its own
 * queue would count each deferral as a delivery. So delayed tasks (countdowns, ETAs, retry delays)
 * wait in their own work-queue stream. Every worker runs a scheduler on one shared durable consumer:
 * a message not yet due is nak'd with the remaining delay (the server redelivers it then), a due one
 * is published to its queue with its dedupe id and acked. Nothing waits in a worker's memory; a
 * task moved twice after a crash is stored once (Nats-Msg-Id).
 */
import type { Msg, MsgHdrs } from "@nats-io/nats-core";
import { copyHeaders } from "./headers.ts";
import { ACK, decodeTaskMessage, HEADER, type Names } from "../protocol/mod.ts";
import type { AckedPublisher } from "../client/mod.ts";

/** What the scheduler decides for one message. */
export type ScheduleDecision =
  | { kind: "wait"; delayMs: number }
  | { kind: "move"; subject: string }
  | { kind: "invalid"; error: Error };

/** Tasks due within this many ms are moved now (a nak delay below it is not worth a round trip). */
const DUE_SLACK_MS = 10;
/** The longest single nak delay: a far-future task is looked at again after this (and re-delayed). */
const MAX_DELAY_MS = 6 * 3600 * 1000;

/** Decides what to do with one scheduled message (pure, for tests). */
export function decide(names: Names, data: Uint8Array, now: number): ScheduleDecision {
  let task;
  try {
    task = decodeTaskMessage(data);
  } catch (err) {
    return { kind: "invalid", error: err as Error };
  }
  const eta = task.eta ?? 0;
  if (eta - now > DUE_SLACK_MS) return { kind: "wait", delayMs: Math.min(eta - now, MAX_DELAY_MS) };
  return { kind: "move", subject: names.taskSubject(task.queue, task.priority ?? 0) };
}

/** Handles one message of the scheduler consumer; resolves once it is settled (acked or nak'd). */
export async function handleScheduled(
  names: Names,
  publisher: AckedPublisher,
  publishAck: (reply: string, body: string) => void,
  msg: Msg,
  onInvalid: (msg: Msg, error: Error) => Promise<void>,
): Promise<void> {
  const d = decide(names, msg.data, Date.now());
  if (d.kind === "invalid") return onInvalid(msg, d.error);
  if (d.kind === "wait") {
    publishAck(msg.reply!, `${ACK.nak} ${JSON.stringify({ delay: Math.round(d.delayMs * 1e6) })}`);
    return;
  }
  try {
    await publisher.publish(d.subject, msg.data, withDedupeId(msg.headers));
  } catch {
    // Not moved: look again shortly.
    publishAck(msg.reply!, `${ACK.nak} ${JSON.stringify({ delay: 1e9 })}`);
    return;
  }
  publishAck(msg.reply!, ACK.ack);
}

/** The message's headers, with a dedupe id added when a foreign sender gave none. */
function withDedupeId(src: MsgHdrs | undefined): MsgHdrs {
  const h = copyHeaders(src);
  if (!h.has(HEADER.msgId)) h.set(HEADER.msgId, `moved.${Date.now()}.${Math.random()}`);
  return h;
}
