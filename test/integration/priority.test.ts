/** Priorities on nats-server 2.9 (a consumer per level, scanned high to low) against a real server. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core";
import { NatsServer } from "../../sdk/testing/mod.ts";
import type { Client } from "../../sdk/client/mod.ts";
import { decodeTaskMessage, encode, HEADER, PROTOCOL_VERSION, type TaskMessage } from "../../sdk/protocol/mod.ts";
import {
  ensurePriorityConsumers,
  PriorityConsumerConflictError,
  PriorityPuller,
  priorityConsumerName,
  subjectsOverlap,
  type PriorityPullerOptions,
} from "../../sdk/worker/priority_puller.ts";
// Not ./helpers.ts: it loads the Worker, and this file tests the puller alone.
import { client, eventually, freshNamespace } from "./basics.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const QUEUE = "jobs";
let ids = 0;

/** Publishes one task (a valid TaskMessage) at `priority`, acked by the stream; its id is `tag`. */
function publishTask(c: Client, priority: number, tag: string): Promise<unknown> {
  const id = `${tag}-${++ids}`;
  const message: TaskMessage = { v: PROTOCOL_VERSION, id, task: "test.prio", args: { tag }, queue: QUEUE, sentAt: Date.now() };
  if (priority) message.priority = priority;
  const h = natsHeaders();
  h.set(HEADER.msgId, id);
  h.set(HEADER.task, "test.prio");
  return c.publisher.publish(c.names.taskSubject(QUEUE, priority), encode(message), h);
}

const tagOf = (msg: Msg) => (decodeTaskMessage(msg.data).args as { tag: string }).tag;

/** A client in a fresh namespace with the tasks stream and the ten level consumers. */
async function setup(): Promise<Client> {
  const c = await client(server, freshNamespace("prio"));
  await c.ensureTopology();
  await ensurePriorityConsumers(await c.jsm(), consumerOptions(c));
  return c;
}

function consumerOptions(c: Client, maxAckPending = -1) {
  return {
    stream: c.names.tasksStream,
    consumerPrefix: c.names.queueConsumer(QUEUE),
    subjectOf: (p: number) => c.names.taskSubject(QUEUE, p),
    levels: 10,
    ackWaitNs: 30e9,
    maxAckPending,
  };
}

/**
 * A puller whose handler records each task's tag, then (after `workMs`, if given) acks and
 * releases it; with `hold: true` it neither acks nor releases.
 */
function puller(c: Client, prefetch: number, o: { workMs?: number; hold?: boolean } & Partial<PriorityPullerOptions> = {}) {
  const seen: string[] = [];
  const held: Msg[] = [];
  const { workMs, hold, ...rest } = o;
  const p: PriorityPuller = new PriorityPuller(c.nc, {
    stream: c.names.tasksStream,
    consumerPrefix: c.names.queueConsumer(QUEUE),
    subjectOf: (n) => c.names.taskSubject(QUEUE, n),
    prefetch,
    onMessage: (msg) => {
      seen.push(tagOf(msg));
      if (hold) {
        held.push(msg);
        return;
      }
      const settle = () => {
        if (c.nc.isClosed() || c.nc.isDraining()) return; // the test ended while this task "ran"
        c.nc.publish(msg.reply!, "+ACK");
        p.release();
      };
      if (workMs) setTimeout(settle, workMs);
      else settle();
    },
    ...rest,
  });
  return { p, seen, held };
}

async function ackPendingOverLevels(c: Client): Promise<number> {
  const jsm = await c.jsm();
  let sum = 0;
  for (let l = 0; l < 10; l++) sum += (await jsm.consumers.info(c.names.tasksStream, priorityConsumerName(c.names.queueConsumer(QUEUE), l))).num_ack_pending;
  return sum;
}

describe("priorities", () => {
  test("priorities - a priority-9 task behind 10,000 priority-0 tasks starts within the next few tasks, idle or busy", async () => {
    await using c = await setup();
    const backlog: Promise<unknown>[] = [];
    for (let i = 0; i < 10_000; i++) backlog.push(publishTask(c, 0, "low"));
    await Promise.all(backlog);
    await publishTask(c, 9, "urgent-first");
    // prefetch 1, and each task takes ~2 ms: a worker busy with the backlog.
    const { p, seen } = puller(c, 1, { workMs: 2 });
    p.start();
    try {
      await eventually(() => seen.length >= 3, 10_000, "three deliveries");
      assert.ok(seen.slice(0, 3).includes("urgent-first"), `first three: ${seen.slice(0, 3).join(", ")}`);
      // Now busy in the middle of the backlog: another urgent task must overtake the 9,900 left.
      await eventually(() => seen.length >= 100, 10_000, "100 deliveries");
      await publishTask(c, 9, "urgent-busy");
      // Counted from the moment the task is stored: deliveries during the publish's round trip
      // (2 ms each; several when two test files share the 2 cores) are not the puller's doing.
      const before = seen.length;
      await eventually(() => seen.includes("urgent-busy"), 5000, "the urgent task");
      const after = seen.indexOf("urgent-busy");
      assert.ok(after - before < 3, `delivered ${after - before + 1} tasks after the task was stored (at most 3)`);
      assert.equal(p.held <= 1, true);
    } finally {
      p.close();
    }
  });

  test("priorities - strict order across levels (9 before 5 before 0) and FIFO within a level, with prefetch 1 and 4", async () => {
    for (const prefetch of [1, 4]) {
      await using c = await setup();
      for (let i = 1; i <= 3; i++) {
        await publishTask(c, 0, `a${i}`);
        await publishTask(c, 5, `b${i}`);
        await publishTask(c, 9, `c${i}`);
      }
      const { p, seen } = puller(c, prefetch);
      p.start();
      try {
        await eventually(() => seen.length === 9, 5000, "nine deliveries");
        assert.deepEqual(seen, ["c1", "c2", "c3", "b1", "b2", "b3", "a1", "a2", "a3"], `prefetch ${prefetch}`);
      } finally {
        p.close();
      }
    }
  });

  test("priorities - never more than prefetch held, across levels, doorbells and fallback scans; a freed credit takes the highest", async () => {
    await using c = await setup();
    for (let i = 0; i < 5; i++) for (const level of [0, 3, 7]) await publishTask(c, level, `l${level}`);
    const { p, seen, held } = puller(c, 3, { hold: true, fallbackMs: 300 });
    p.start();
    try {
      await eventually(() => seen.length === 3, 5000, "three deliveries");
      assert.deepEqual(seen, ["l7", "l7", "l7"]);
      // Doorbells on every level while full, then several fallback scans.
      for (const level of [9, 5, 0, 9]) await publishTask(c, level, `late${level}`);
      await sleep(1500);
      assert.equal(seen.length, 3, "nothing more delivered while no credit is free");
      assert.equal(p.held, 3);
      assert.equal(await ackPendingOverLevels(c), 3, "the server holds exactly prefetch messages for us");
      // One credit back: the next delivery is the highest level waiting, not the oldest.
      const first = held.shift()!;
      c.nc.publish(first.reply!, "+ACK");
      p.release();
      await eventually(() => seen.length === 4, 5000, "one more delivery");
      await sleep(500);
      assert.deepEqual(seen.slice(3), ["late9"]);
      assert.equal(await ackPendingOverLevels(c), 3);
    } finally {
      p.close();
    }
  });

  test("priorities - an idle puller sends no requests, and the doorbell wakes it when a task arrives", async () => {
    await using c = await setup();
    // No fallback scans during the test: only the doorbell can find the task.
    const { p, seen } = puller(c, 2, { fallbackMs: 60_000 });
    let requests = 0;
    const counter = c.nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${c.names.tasksStream}.>`, { callback: () => void requests++ });
    await c.nc.flush();
    p.start();
    try {
      await sleep(3000);
      assert.equal(requests, 10, "one scan of the ten levels at start, then silence");
      const t0 = Date.now();
      await publishTask(c, 3, "wake");
      await eventually(() => seen.includes("wake"), 2000, "the task after 3 s of idle");
      const latency = Date.now() - t0;
      assert.ok(latency < 2000, `received after ${latency} ms`);
    } finally {
      p.close();
      counter.unsubscribe();
    }
  });

  test("priorities - without a doorbell the fallback timer finds new tasks and redeliveries", async () => {
    await using c = await setup();
    const { p, seen } = puller(c, 1, { doorbell: false, fallbackMs: 500 });
    p.start();
    try {
      await sleep(1000);
      await publishTask(c, 4, "quiet");
      await eventually(() => seen.includes("quiet"), 2000, "the task without a doorbell");
    } finally {
      p.close();
    }
    // A nak'd task comes back without any publish (no doorbell): the fallback scan finds it.
    const { p: q, seen: seen2 } = puller(c, 1, { hold: true, fallbackMs: 500 });
    await publishTask(c, 8, "naked");
    const probe: Msg[] = [];
    const { p: grab } = puller(c, 1, { hold: true, onMessage: (m) => probe.push(m) });
    grab.start();
    await eventually(() => probe.length === 1, 2000, "the first delivery");
    grab.close();
    q.start();
    try {
      await sleep(300); // q scanned: nothing deliverable (the task is held by `grab`)
      assert.equal(seen2.length, 0);
      c.nc.publish(probe[0]!.reply!, "-NAK");
      await eventually(() => seen2.includes("naked"), 2000, "the nak'd task");
    } finally {
      q.close();
    }
  });

  test("priorities - ensurePriorityConsumers is idempotent and refuses, saying what to do, when the FIFO consumer q-<queue> exists", async () => {
    await using c = await client(server, freshNamespace("prio"));
    await c.ensureTopology();
    const jsm = await c.jsm();
    const n = c.names;
    // Another queue's FIFO consumer does not conflict.
    await jsm.consumers.add(n.tasksStream, { durable_name: n.queueConsumer("other"), filter_subject: n.queueFilter("other"), ack_policy: "explicit" as never });
    await ensurePriorityConsumers(jsm, consumerOptions(c));
    await ensurePriorityConsumers(jsm, consumerOptions(c, 5));
    const made = [];
    for await (const ci of jsm.consumers.list(n.tasksStream)) made.push(ci);
    const mine = made.filter((ci) => ci.name.startsWith(`${n.queueConsumer(QUEUE)}-p`)).sort((a, b) => a.name.localeCompare(b.name));
    assert.equal(mine.length, 10);
    mine.forEach((ci, l) => {
      assert.equal(ci.name, `q-${QUEUE}-p${l}`);
      assert.equal(ci.config.filter_subject, n.taskSubject(QUEUE, l));
      assert.equal(ci.config.max_ack_pending, 5, "updated by the second call");
      assert.equal(ci.config.max_deliver, -1);
    });

    // A queue still served in FIFO order: the server would refuse; we say what to do.
    const fifoQueue = "legacy";
    await jsm.consumers.add(n.tasksStream, { durable_name: n.queueConsumer(fifoQueue), filter_subject: n.queueFilter(fifoQueue), ack_policy: "explicit" as never });
    const options = { ...consumerOptions(c), consumerPrefix: n.queueConsumer(fifoQueue), subjectOf: (p: number) => n.taskSubject(fifoQueue, p) };
    await assert.rejects(ensurePriorityConsumers(jsm, options), (e: unknown) => {
      assert.ok(e instanceof PriorityConsumerConflictError, String(e));
      assert.equal(e.consumer, "q-legacy");
      assert.match(e.message, /FIFO consumer "q-legacy"/);
      assert.match(e.message, /stop every worker of the queue that runs without priorities/);
      assert.match(e.message, new RegExp(`nats consumer rm ${n.tasksStream} q-legacy`));
      return true;
    });
    // Nothing half-made, and following the advice works.
    assert.equal((await jsm.consumers.list(n.tasksStream).next()).filter((ci) => ci.name.startsWith("q-legacy-p")).length, 0);
    await jsm.consumers.delete(n.tasksStream, "q-legacy");
    await ensurePriorityConsumers(jsm, options);
  });

  test("priorities - after a server restart, reconnected() rescans and tasks flow again", async () => {
    await using own = await NatsServer.start();
    await using c = await client(own, freshNamespace("prio"));
    await c.ensureTopology();
    await ensurePriorityConsumers(await c.jsm(), consumerOptions(c));
    const { p, seen } = puller(c, 2, { fallbackMs: 60_000 });
    let reconnects = 0;
    void (async () => {
      for await (const s of c.nc.status()) {
        if (s.type === "reconnect") {
          reconnects++;
          p.reconnected();
        }
      }
    })();
    p.start();
    try {
      await publishTask(c, 2, "before");
      await eventually(() => seen.includes("before"), 2000, "the task before the restart");
      await own.restart();
      await eventually(() => reconnects > 0, 15_000, "the reconnect");
      await publishTask(c, 7, "after");
      await publishTask(c, 1, "after-low");
      await eventually(() => seen.includes("after") && seen.includes("after-low"), 5000, "the tasks after the restart");
      assert.deepEqual(seen, ["before", "after", "after-low"]);
      assert.equal(p.held, 0);
    } finally {
      p.close();
    }
  });

  test("priorities - subject overlap", () => {
    assert.ok(subjectsOverlap("ns.tasks.q.>", "ns.tasks.q.9"));
    assert.ok(subjectsOverlap("ns.tasks.*.9", "ns.tasks.q.9"));
    assert.ok(subjectsOverlap(">", "a"));
    assert.ok(!subjectsOverlap("ns.tasks.q.>", "ns.tasks.q"));
    assert.ok(!subjectsOverlap("ns.tasks.other.>", "ns.tasks.q.9"));
    assert.ok(!subjectsOverlap("ns.tasks.q.8", "ns.tasks.q.9"));
  });
});
