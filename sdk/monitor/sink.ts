/**
 * A sink keeps a store (a results table) up to date from the events stream, exactly once per
 * event across its own restarts:
 *
 * 1. The store keeps, in the same transaction as the rows, the stream sequence of the last event
 *    batch it applied (its offset).
 * 2. At start the sink reads that offset and points its durable consumer just past it (see
 *    {@link alignDurable}), so batches a crashed run held unacked are read again, in order.
 * 3. It takes the batches buffered now (up to `batch`), skips any at or below the offset (a
 *    redelivery of a batch already applied), folds the rest per task, applies them and the new
 *    offset in one transaction, and only then acks them.
 *
 * A crash before the commit loses nothing (the batch is read again); a crash after the commit and
 * before the acks applies nothing twice (the redelivered batch is at or below the offset).
 */
import type { JsMsg } from "@nats-io/jetstream";
import { assertToken, decodeEventBatch } from "../protocol/mod.ts";
import type { Client } from "../client/mod.ts";
import { alignDurable, DurableFeed, type DurableSettings } from "./consumers.ts";
import { applyEvent, isTaskEvent, type TaskView } from "./timeline.ts";

/** Where a store says it is in the stream. */
export interface SinkOffset {
  /** Stream sequence of the last applied message. */
  seq: number;
  /** The stream's `created` time when that offset was stored (a recreated stream starts over). */
  streamCreated?: string;
}

/** One transaction's worth of work for a store. */
export interface SinkBatch {
  stream: string;
  streamCreated: string;
  /** One folded view per task id touched by the batch's events. */
  tasks: TaskView[];
  /** Events folded in. */
  events: number;
  /** Stream messages (event batches) applied; messages at or below the offset are not counted. */
  messages: number;
  firstSeq: number;
  /** The new offset: the highest stream sequence applied. */
  lastSeq: number;
  /**
   * The offset the store held before this batch, as this sink read or wrote it (undefined: none).
   * A store moves the offset only from this value, so two sinks on one store cannot both apply.
   */
  previous?: number;
}

/** A store a sink writes to. */
export interface SinkTarget {
  /** The stored offset for `stream`, or undefined when nothing was applied yet. */
  readOffset(stream: string): Promise<SinkOffset | undefined>;
  /** Applies the views and stores the offset `batch.lastSeq`, atomically (one transaction). */
  apply(batch: SinkBatch): Promise<void>;
}

/** Options of {@link runSink}. */
export interface SinkOptions {
  /** Durable consumer name (default `sink`). */
  durable?: string;
  /** At most this many stream messages (event batches) per transaction (default 256). */
  batch?: number;
  /** Keep following (default). `false` returns once the events stored at start are applied. */
  follow?: boolean;
  /** Stops after the batch in hand is applied and acked. */
  signal?: AbortSignal;
  /** Called after each committed batch. */
  onBatch?(batch: Omit<SinkBatch, "tasks"> & { tasks: number; ms: number }): void;
  /** Things an operator should know (events expired before they were read, a recreated stream). */
  onNotice?(text: string): void;
  /** Called once the consumer is in place, before the first batch: where the sink resumes. */
  onStart?(info: { stream: string; offset: number; realigned: boolean; pending: number }): void;
}

/** What a sink run did. */
export interface SinkStats {
  /** Stream sequence the run started after (the stored offset). */
  startOffset: number;
  /** Offset when it stopped. */
  offset: number;
  batches: number;
  messages: number;
  events: number;
  /** Messages at or below the offset (redeliveries of applied batches): acked, not applied. */
  duplicates: number;
  /** Messages that are not event batches: skipped (and counted in the offset). */
  undecodable: number;
  /** True when the durable consumer was recreated at the offset. */
  realigned: boolean;
}

/** Delivered-but-unacked batches a sink may hold: bounds its memory. */
const SINK_MAX_ACK_PENDING = 1024;
const SINK_ACK_WAIT_MS = 60_000;

/**
 * Follows the events stream durably into `target` until `signal` aborts (or, with
 * `follow: false`, until it caught up). Rejects when the store or the stream fails; nothing is
 * acked that was not committed, so running it again resumes correctly.
 */
export async function runSink(client: Client, target: SinkTarget, options: SinkOptions = {}): Promise<SinkStats> {
  const { durable = "sink", batch = 256, follow = true, signal, onBatch, onNotice, onStart } = options;
  assertToken("durable name", durable);
  if (!Number.isSafeInteger(batch) || batch < 1) throw new TypeError("batch must be a whole number >= 1");
  await client.ensureTopology();
  const n = client.names;
  const stream = n.eventsStream;
  const jsm = await client.jsm();
  const si = await jsm.streams.info(stream);
  const streamCreated = si.created;

  let stored = await target.readOffset(stream);
  let previous = stored?.seq;
  if (stored && stored.streamCreated && stored.streamCreated !== streamCreated) {
    onNotice?.(`stream ${stream} was recreated (created ${streamCreated}, was ${stored.streamCreated}): reading it from its start`);
    stored = undefined;
  } else if (stored && stored.seq > si.state.last_seq) {
    onNotice?.(`stream ${stream} ends at sequence ${si.state.last_seq}, below the stored offset ${stored.seq}: it was purged or recreated; reading it from its start`);
    stored = undefined;
  }
  let offset = stored?.seq ?? 0;
  if (si.state.messages > 0 && offset + 1 < si.state.first_seq) {
    onNotice?.(`events in stream messages ${offset + 1}..${si.state.first_seq - 1} expired before this sink read them`);
  }
  const settings: DurableSettings = { name: durable, subject: n.eventsSubject("task"), since: "all", maxAckPending: SINK_MAX_ACK_PENDING, ackWaitMs: SINK_ACK_WAIT_MS };
  const { recreated } = await alignDurable(client, stream, settings, offset);
  const stats: SinkStats = { startOffset: offset, offset, batches: 0, messages: 0, events: 0, duplicates: 0, undecodable: 0, realigned: recreated };

  const feed = await DurableFeed.open(client, stream, durable, Math.min(batch, SINK_MAX_ACK_PENDING));
  onStart?.({ stream, offset, realigned: recreated, pending: feed.initialPending });
  const stop = () => feed.interrupt();
  signal?.addEventListener("abort", stop, { once: true });
  try {
    if (signal?.aborted || (!follow && feed.initialPending === 0)) return stats;
    for (;;) {
      const msgs = await feed.take(batch);
      if (msgs.length === 0) break;
      const started = Date.now();
      const views = new Map<string, TaskView>();
      let events = 0;
      let applied = 0;
      let firstSeq = 0;
      let lastSeq = offset;
      for (const m of msgs) {
        // At or below the offset: a redelivery of an applied batch (or a duplicate delivery).
        if (m.seq <= lastSeq) {
          stats.duplicates++;
          continue;
        }
        lastSeq = m.seq;
        if (firstSeq === 0) firstSeq = m.seq;
        applied++;
        let batchEvents: unknown[];
        try {
          batchEvents = decodeEventBatch(m.data).events;
        } catch {
          stats.undecodable++;
          continue;
        }
        for (const e of batchEvents) {
          if (!isTaskEvent(e)) continue;
          views.set(e.id, applyEvent(views.get(e.id), e, m.seq));
          events++;
        }
      }
      if (lastSeq > offset) {
        const work: SinkBatch = { stream, streamCreated, tasks: [...views.values()], events, messages: applied, firstSeq, lastSeq };
        if (previous !== undefined) work.previous = previous;
        await target.apply(work);
        offset = lastSeq;
        previous = lastSeq;
        stats.offset = offset;
        stats.batches++;
        stats.messages += applied;
        stats.events += events;
        const { tasks, ...rest } = work;
        onBatch?.({ ...rest, tasks: tasks.length, ms: Date.now() - started });
      }
      // Only now, after the commit: acknowledge (a lost ack is a redelivery at or below the offset).
      ackAll(msgs);
      if (signal?.aborted) break;
      if (!follow && feed.buffered === 0 && msgs[msgs.length - 1]!.info.pending === 0) break;
    }
    return stats;
  } finally {
    signal?.removeEventListener("abort", stop);
    feed.close();
  }
}

function ackAll(msgs: JsMsg[]): void {
  for (const m of msgs) m.ack();
}
