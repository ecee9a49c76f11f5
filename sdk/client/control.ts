/**
 * Inspecting and controlling workers from any client, and reading the registry of live workers.
 * Replies are gathered on one inbox until the timeout (or until every named worker answered).
 */
import { createInbox, type NatsConnection } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import {
  decode,
  decodeTaskMessage,
  encode,
  PROTOCOL_VERSION,
  type ControlDestination,
  type ControlReply,
  type Names,
  type TaskMessage,
  type WorkerEntry,
} from "../protocol/mod.ts";
import { isNotFound } from "./topology.ts";

/** Options of inspect/control calls. */
export interface ControlOptions {
  /** Which workers: ids, hosts or queues they consume. Default: all. */
  destination?: ControlDestination;
  /** Milliseconds to gather replies. Default 1000. */
  timeout?: number;
}

/** Verbs that only read (Celery's `inspect`). */
export const INSPECT_VERBS = ["ping", "active", "reserved", "scheduled", "registered", "stats", "queues", "revoked"] as const;
/** Verbs that change a worker (Celery's `control`). */
export const CONTROL_VERBS = [
  "shutdown", "pool_grow", "pool_shrink", "rate_limit", "add_consumer", "cancel_consumer", "pause_queue", "resume_queue",
] as const;
/** One inspect verb. */
export type InspectVerb = (typeof INSPECT_VERBS)[number];
/** One control verb. */
export type ControlVerb = (typeof CONTROL_VERBS)[number];

/** Sends one control request and gathers the replies. */
export async function gatherReplies(
  nc: NatsConnection,
  names: Names,
  verb: string,
  args: Record<string, unknown> | undefined,
  options: ControlOptions = {},
): Promise<ControlReply[]> {
  const timeout = options.timeout ?? 1000;
  const inbox = createInbox();
  const replies: ControlReply[] = [];
  const expected = options.destination?.workers?.length;
  return new Promise<ControlReply[]>((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const sub = nc.subscribe(inbox, {
      callback: (_e, m) => {
        try {
          replies.push(decode(m.data) as ControlReply);
        } catch {
          return;
        }
        if (expected !== undefined && replies.length >= expected) finish();
      },
    });
    const finish = () => {
      if (timer) clearTimeout(timer);
      if (!nc.isClosed()) sub.unsubscribe();
      resolve(replies.sort((a, b) => a.worker.localeCompare(b.worker)));
    };
    timer = setTimeout(finish, timeout);
    const body = { v: PROTOCOL_VERSION, verb, ...(args ? { args } : {}), ...(options.destination ? { destination: options.destination } : {}) };
    // Flush the subscription first so no reply can arrive before it exists on the server.
    nc.flush().then(() => nc.publish(names.controlSubject(verb), encode(body), { reply: inbox }), finish);
  });
}

/** Live workers from the registry (entries expire one lease after a worker's last heartbeat). */
export async function listWorkers(jsm: JetStreamManager, names: Names): Promise<WorkerEntry[]> {
  const stream = `KV_${names.workersBucket}`;
  const info = await streamInfoOrNone(jsm, stream, { subjects_filter: `$KV.${names.workersBucket}.>` });
  if (!info) return []; // no worker ever started in this namespace
  const subjects = Object.keys(info.state.subjects ?? {});
  const out: WorkerEntry[] = [];
  for (const subject of subjects) {
    try {
      const m = await jsm.streams.getMessage(stream, { last_by_subj: subject });
      if (m?.data.length) out.push(decode(m.data) as WorkerEntry);
    } catch {
      // Expired between the listing and the read: it is gone.
    }
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/** A stream's info, or undefined when it does not exist (read calls do not create topology). */
async function streamInfoOrNone(jsm: JetStreamManager, stream: string, opts?: Parameters<JetStreamManager["streams"]["info"]>[1]) {
  try {
    return await jsm.streams.info(stream, opts);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Tasks waiting for their ETA in the scheduled stream, soonest first. */
export async function listScheduled(jsm: JetStreamManager, names: Names, limit = 1000): Promise<(Pick<TaskMessage, "id" | "task" | "queue" | "eta" | "retries">)[]> {
  const info = await streamInfoOrNone(jsm, names.scheduledStream);
  const out: Pick<TaskMessage, "id" | "task" | "queue" | "eta" | "retries">[] = [];
  if (!info || info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < limit; seq++) {
    try {
      const m = await jsm.streams.getMessage(names.scheduledStream, { seq });
      if (!m) continue;
      const t = decodeTaskMessage(m.data);
      out.push({ id: t.id, task: t.task, queue: t.queue, ...(t.eta !== undefined ? { eta: t.eta } : {}), ...(t.retries ? { retries: t.retries } : {}) });
    } catch {
      // Deleted (moved to its queue) or unreadable: skip.
    }
  }
  return out.sort((a, b) => (a.eta ?? 0) - (b.eta ?? 0));
}
