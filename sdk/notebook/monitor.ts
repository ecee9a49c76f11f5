/**
 * Reading a namespace's state for a notebook: queue depths from stream and consumer info, task
 * events from the events stream, and completed tasks over time.
 */
import { isNotFound, type Client } from "../client/mod.ts";
import { decodeEventBatch, EVENT, type TaskEvent } from "../protocol/mod.ts";
import type { Series } from "./render.ts";

/** The backlog of one queue. */
export interface QueueDepth {
  queue: string;
  /** Tasks stored on the queue's subjects (not yet acked by a worker). */
  stored: number;
  /** Of those, not yet delivered to any worker (the queue's consumer's pending count). */
  waiting: number;
  /** Delivered to a worker and not yet acked (running or prefetched). */
  running: number;
  /** Tasks with a future ETA (countdowns, retries) waiting in the scheduled stream. */
  scheduled: number;
}

type Monitorable = Pick<Client, "jsm" | "names">;

async function subjectCounts(client: Monitorable, stream: string, filter: string): Promise<Record<string, number>> {
  const jsm = await client.jsm();
  try {
    return (await jsm.streams.info(stream, { subjects_filter: filter })).state.subjects ?? {};
  } catch (err) {
    if (isNotFound(err)) return {};
    throw err;
  }
}

/** Queue depths of the client's namespace, one row per queue that has tasks or a consumer. */
export async function queueDepths(client: Monitorable): Promise<QueueDepth[]> {
  const n = client.names;
  const rows = new Map<string, QueueDepth>();
  const row = (queue: string) => {
    let r = rows.get(queue);
    if (!r) rows.set(queue, (r = { queue, stored: 0, waiting: 0, running: 0, scheduled: 0 }));
    return r;
  };
  for (const [subject, count] of Object.entries(await subjectCounts(client, n.tasksStream, n.tasksWildcard))) {
    const queue = n.queueOfSubject(subject);
    if (queue !== undefined) row(queue).stored += count;
  }
  const scheduledPrefix = n.scheduledWildcard.slice(0, -1);
  for (const [subject, count] of Object.entries(await subjectCounts(client, n.scheduledStream, n.scheduledWildcard))) {
    if (subject.startsWith(scheduledPrefix)) row(subject.slice(scheduledPrefix.length)).scheduled += count;
  }
  const jsm = await client.jsm();
  try {
    for await (const ci of jsm.consumers.list(n.tasksStream)) {
      const queue = n.queueOfSubject(ci.config.filter_subject ?? "");
      if (queue === undefined) continue;
      const r = row(queue);
      r.waiting += ci.num_pending;
      r.running += ci.num_ack_pending;
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  return [...rows.values()].sort((a, b) => a.queue.localeCompare(b.queue));
}

/** Options of {@link readEvents}. */
export interface ReadEventsOptions {
  /** Only events at or after this time. */
  since?: Date | number;
  /** Stop after this many events. Default 100 000. */
  limit?: number;
}

/**
 * Reads the task events stored in the namespace's events stream (`<NS>_EVENTS`), oldest first,
 * up to the last one stored when it was called. Each stored message is a batch of events.
 */
export async function readEvents(client: Monitorable, options: ReadEventsOptions = {}): Promise<TaskEvent[]> {
  const n = client.names;
  const jsm = await client.jsm();
  let last: number;
  try {
    const info = await jsm.streams.info(n.eventsStream);
    if (info.state.messages === 0) return [];
    last = info.state.last_seq;
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const since = options.since === undefined ? undefined : new Date(options.since).getTime();
  const limit = options.limit ?? 100_000;
  const subject = n.eventsSubject("task");
  // An ordered consumer: ephemeral, no acks, removed by the server when we stop reading.
  const consumer = await jsm.jetstream().consumers.get(
    n.eventsStream,
    since === undefined ? {} : { deliver_policy: "by_start_time", opt_start_time: new Date(since).toISOString() },
  );
  const events: TaskEvent[] = [];
  try {
    let seq = 0;
    while (seq < last && events.length < limit) {
      const batch = await consumer.fetch({ max_messages: 256, expires: 2_000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        seq = m.seq;
        // Worker heartbeats share the stream; undecodable batches are skipped, not fatal.
        if (m.subject !== subject) continue;
        try {
          for (const e of decodeEventBatch(m.data).events) if (since === undefined || e.at >= since) events.push(e);
        } catch {
          /* not an event batch */
        }
      }
      if (got === 0) break;
    }
  } finally {
    await consumer.delete().catch(() => {});
  }
  return events.slice(0, limit);
}

/** Options of {@link throughput}. */
export interface ThroughputOptions {
  /** Width of one time bucket in ms; default: a round width giving at most 60 buckets. */
  bucketMs?: number;
  /** Range to cover (epoch ms or Date); default: from the first to the last completion. */
  from?: Date | number;
  to?: Date | number;
  /** Report tasks per second instead of tasks per bucket. */
  perSecond?: boolean;
}

const NICE_BUCKETS_MS = [100, 250, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 216e5, 432e5, 864e5];

/**
 * Completed tasks over time from task events: a "succeeded" and a "failed" series of counts per
 * time bucket (x = bucket start, epoch ms), ready for `chart()`.
 */
export function throughput(events: readonly TaskEvent[], options: ThroughputOptions = {}): Series[] {
  const done = events.filter((e) => e.type === EVENT.succeeded || e.type === EVENT.failed);
  if (done.length === 0) return [{ name: "succeeded", points: [] }, { name: "failed", points: [] }];
  const times = done.map((e) => e.at);
  const from = options.from !== undefined ? new Date(options.from).getTime() : Math.min(...times);
  const to = options.to !== undefined ? new Date(options.to).getTime() : Math.max(...times);
  const span = Math.max(1, to - from);
  const bucketMs = options.bucketMs ?? NICE_BUCKETS_MS.find((b) => span / b <= 60) ?? 864e5;
  const start = Math.floor(from / bucketMs) * bucketMs;
  const count = Math.floor((to - start) / bucketMs) + 1;
  if (count > 10_000) throw new RangeError(`throughput: ${count} buckets of ${bucketMs} ms; pass a larger bucketMs`);
  const ok = new Array<number>(count).fill(0);
  const bad = new Array<number>(count).fill(0);
  for (const e of done) {
    const i = Math.floor((e.at - start) / bucketMs);
    if (i < 0 || i >= count) continue;
    (e.type === EVENT.succeeded ? ok : bad)[i]!++;
  }
  const scale = options.perSecond ? 1000 / bucketMs : 1;
  const points = (values: number[]) => values.map((v, i) => [start + i * bucketMs, v * scale] as const);
  return [{ name: "succeeded", points: points(ok) }, { name: "failed", points: points(bad) }];
}
