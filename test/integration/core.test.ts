/** The core contract against a real nats-server: send, call, results, failures, dead letters, events. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { headers } from "@nats-io/nats-core";
import { NatsServer } from "../../sdk/testing/mod.ts";
import {
  CelerityError,
  InvalidArgumentsError,
  PublishError,
  RemoteTaskError,
  ResultTimeoutError,
  STATE,
} from "../../sdk/client/mod.ts";
import { decodeEventBatch, decodeResultRecord, decodeTaskMessage, encode, HEADER, names, PROTOCOL_VERSION, UnsupportedVersionError, type TaskEvent, type TaskMessage } from "../../sdk/protocol/mod.ts";
import { NonRetryableError, type Worker } from "../../sdk/worker/mod.ts";
import { add, badResult, echo, fail, parseDate, slow } from "../fixtures/signatures.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";
import * as v from "valibot";
import { signature } from "../../sdk/signatures/mod.ts";

/** 10 per second on each worker: slots wait for tokens. */
const limited = signature("core.limited", { args: v.object({ i: v.number() }), result: v.number(), rateLimit: "10/s" });
/** 2 per second on each worker. */
const throttled = signature("core.throttled", { args: v.object({ i: v.number() }), result: v.number(), rateLimit: "2/s" });

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

async function streamMessages(c: Awaited<ReturnType<typeof client>>, stream: string): Promise<number> {
  const jsm = await c.jsm();
  return (await jsm.streams.info(stream)).state.messages;
}

/** The task message stored last in the namespace's tasks stream. */
async function lastStoredTask(c: Awaited<ReturnType<typeof client>>): Promise<TaskMessage> {
  const jsm = await c.jsm();
  const { state } = await jsm.streams.info(c.names.tasksStream);
  return decodeTaskMessage((await jsm.streams.getMessage(c.names.tasksStream, { seq: state.last_seq }))!.data);
}

/** What a promise settled with within `ms`: "stored" (fulfilled), its error, or "still pending …". */
async function outcomeWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise((r) => (timer = setTimeout(() => r(`still pending after ${ms} ms`), ms)));
  try {
    return await Promise.race([p.then(() => "stored", (err: Error) => err), pending]);
  } finally {
    clearTimeout(timer);
  }
}

async function allEvents(c: Awaited<ReturnType<typeof client>>): Promise<TaskEvent[]> {
  const jsm = await c.jsm();
  const info = await jsm.streams.info(c.names.eventsStream);
  const events: TaskEvent[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(c.names.eventsStream, { seq });
    if (m) events.push(...decodeEventBatch(m.data).events);
  }
  return events;
}

describe("core", () => {
  test("client - call() sends typed args and returns the typed result over request/reply", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b);
    await w.start();
    await using c = await client(server, ns);
    const sum: number = await c.call(add, { a: 2, b: 40 }, { timeout: 10_000 });
    assert.equal(sum, 42);
  });

  test("client - call() asks the worker for a reply; send() does not, and its handle follows the stored result", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    // Replies the worker publishes, whoever they are for: every inbox, from another connection (on
    // c's own, nats-server would hand this subscription the "no responders" status meant for c's
    // publisher, which needs it to create the topology).
    await using tap = await client(server, ns);
    const replies: string[] = [];
    const spy = tap.nc.subscribe("_INBOX.>", { callback: (_e, msg) => void replies.push(msg.subject) });
    await tap.nc.flush();
    const sent = await c.send(add, { a: 1, b: 2 });
    const stored = await lastStoredTask(c);
    assert.equal(stored.id, sent.id);
    assert.equal(stored.replyTo, undefined, "a sent task names no reply subject");
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b);
    await w.start();
    assert.equal(await sent.result({ timeout: 10_000 }), 3, "the handle reads the stored result");
    assert.equal(await c.call(add, { a: 2, b: 3 }, { timeout: 10_000 }), 5);
    await tap.nc.flush();
    spy.unsubscribe();
    assert.equal(replies.filter((s) => s.endsWith(`.${sent.id}`)).length, 0, "no reply for the sent task");
    assert.equal(replies.filter((s) => !s.endsWith(`.${sent.id}`) && /\.[0-9a-f-]{36}$/.test(s)).length, 1, "one reply for the call");
  });

  test("client - the first send into a fresh namespace works beside a `>` subscription on the same connection", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns, { requestTimeout: 500 });
    // nats-server gives the "no responders" status (no stream yet) to one matching subscription of
    // the connection: this tap may take it, and the publisher then hears nothing at all.
    const tap = c.nc.subscribe(">", { callback: () => {} });
    await c.nc.flush();
    const sent = await Promise.race([
      c.send(add, { a: 1, b: 2 }),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error("send() did not finish within 15 s")), 15_000)),
    ]);
    tap.unsubscribe();
    assert.equal((await lastStoredTask(c)).id, sent.id);
  });

  test("worker - start() rides out a server that stops answering for a few seconds", async () => {
    // SIGSTOP: the server keeps its sockets but answers nothing, as a cluster electing a leader
    // lets API requests time out. nats.js gives up on a request after 5 s; start() tries again.
    const own = await NatsServer.start();
    try {
      const ns = freshNamespace();
      await using c = await client(own, ns);
      const w = worker(own, ns, { client: c }).implement(add, ({ a, b }) => a + b);
      process.kill(own.pid!, "SIGSTOP");
      const starting = w.start();
      await new Promise((r) => setTimeout(r, 6500));
      process.kill(own.pid!, "SIGCONT");
      await starting;
      assert.equal(await c.call(add, { a: 20, b: 22 }, { timeout: 10_000 }), 42);
      await w.close();
    } finally {
      try {
        process.kill(own.pid!, "SIGCONT");
      } catch {
        // already gone
      }
      await own.stop();
    }
  });

  test("client - topology requests wait requestTimeout, and a failed JetStream handshake is asked again", async () => {
    const own = await NatsServer.start();
    // requestTimeout 600 ms: nats.js's own default is 5 s, which the old code waited.
    const c = await client(own, freshNamespace(), { requestTimeout: 600 });
    try {
      process.kill(own.pid!, "SIGSTOP");
      const t0 = Date.now();
      await assert.rejects(c.ensureTopology(), (err: Error) => /timeout/i.test(`${err.name} ${err.message}`));
      const waited = Date.now() - t0;
      assert.ok(waited < 4000, `ensureTopology() gave up after ${waited} ms, not after requestTimeout (600 ms)`);
      process.kill(own.pid!, "SIGCONT");
      // The first jsm() failed with the server silent; that failure must not be cached.
      await c.ensureTopology();
      assert.equal(await streamMessages(c, c.names.tasksStream), 0);
    } finally {
      try {
        process.kill(own.pid!, "SIGCONT");
      } catch {
        // already gone
      }
      await c.close();
      await own.stop();
    }
  });

  test("client - a server without JetStream: send() fails at once and says how to enable it", async () => {
    const plain = await NatsServer.start({ jetstream: false });
    try {
      await using c = await client(plain, freshNamespace(), { events: false });
      // The old code resent for its whole 60 s deadline, then blamed "no responders".
      const sent = c.send(add, { a: 1, b: 2 });
      const outcome = await outcomeWithin(sent, 15_000);
      assert.ok(outcome instanceof PublishError, `send(): ${String(outcome)}`);
      assert.match(outcome.message, /JetStream is not enabled.*-js/);
      await assert.rejects(c.ensureTopology(), (err: Error) => err instanceof CelerityError && /start nats-server with -js/.test(err.message));
    } finally {
      await plain.stop();
    }
  });

  test("client - a stream of another application on our subjects: send() fails at once with the overlap", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns, { events: false });
    const jsm = await c.jsm();
    // Takes the events subjects: the tasks stream can be made, the events stream cannot.
    await jsm.streams.add({ name: `${ns}_SQUATTER`, subjects: [`${ns}.events.>`] });
    try {
      const sent = c.send(add, { a: 1, b: 2 });
      const outcome = await outcomeWithin(sent, 15_000);
      assert.ok(outcome instanceof PublishError, `send(): ${String(outcome)}`);
      assert.match(outcome.message, /overlap an existing stream/);
    } finally {
      await jsm.streams.delete(`${ns}_SQUATTER`);
    }
  });

  test("worker - after close() nothing of the worker or its client keeps the process alive", async () => {
    // A script that runs a worker and closes it must exit by itself; a pending timer held it for
    // up to the 30 s grace (close() raced idleness with an uncleared timer) or 5 s (revocations).
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const ns = freshNamespace();
    let started = false;
    const w = worker(server, ns).implement(slow, async ({ ms }) => {
      started = true;
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    });
    await w.start();
    const c = await client(server, ns);
    const h = await c.send(slow, { ms: 300 });
    // Closed while the task runs: close() waits for it (warm shutdown).
    await eventually(() => started, 10_000, "the task to start");
    await w.close();
    assert.deepEqual(await h.result({ timeout: 10_000 }), { slept: 300 });
    await c.close();
    assert.equal(timers(), before, `timers left: ${process.getActiveResourcesInfo().join(", ")}`);
  });

  test("client - send() returns a handle whose status, ready and result follow the task", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    const handle = await c.send(add, { a: 1, b: 2 });
    assert.match(handle.id, /^[0-9a-f-]{36}$/);
    assert.equal((await handle.status()).state, STATE.pending, "no worker yet: PENDING");
    assert.equal(await handle.ready(), false);
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b);
    await w.start();
    assert.equal(await handle.result({ timeout: 10_000 }), 3);
    const status = await handle.status();
    assert.equal(status.state, STATE.success);
    assert.equal(status.record?.worker?.id, w.identity.id);
    assert.equal(status.record?.worker?.pid, process.pid);
    const r = status.record!;
    assert.ok(r.sentAt! <= r.receivedAt! && r.receivedAt! <= r.startedAt! && r.startedAt! <= r.finishedAt!, "timestamps in order");
    assert.equal(await handle.ready(), true);
  });

  test("client - a process that only knows the id gets the stored result", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b);
    await w.start();
    let id: string;
    {
      await using sender = await client(server, ns);
      id = (await sender.send(add, { a: 5, b: 5 })).id;
    }
    // slowq has no worker yet: it must be declared to be sent to (no silent black hole).
    await using other = await client(server, ns, { queues: { slowq: {} } });
    assert.equal(await other.task(id, add).result({ timeout: 10_000 }), 10);
    // And one that asks before the result exists follows it live.
    const late = await other.send(slow, { ms: 300 }, { queue: "slowq" });
    await using third = await client(server, ns);
    const waiting = third.task(late.id, slow).result({ timeout: 10_000 });
    await using w2 = worker(server, ns, { queues: ["slowq"] }).implement(slow, async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    });
    await w2.start();
    assert.deepEqual(await waiting, { slept: 300 });
  });

  test("client - invalid args throw the schema's message and nothing is published", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    await c.ensureTopology();
    await assert.rejects(
      // @ts-expect-error b must be a number
      c.send(add, { a: 1, b: "two" }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentsError);
        assert.equal(err.task, "math.add");
        assert.equal(err.issues[0]?.path, "b");
        assert.match(err.message, /invalid arguments for task "math\.add": b: Invalid type: Expected number but received "two"/);
        return true;
      },
    );
    assert.equal(await streamMessages(c, c.names.tasksStream), 0);
  });

  test("client - a remote failure comes back typed with type, message, stack and retryable", async () => {
    const ns = freshNamespace();
    class QuotaError extends Error {
      override name = "QuotaError";
    }
    await using w = worker(server, ns)
      .implement(fail, ({ message }) => {
        if (message === "fatal") throw new NonRetryableError("no point retrying");
        throw new QuotaError(message);
      });
    await w.start();
    await using c = await client(server, ns);
    await assert.rejects(c.call(fail, { message: "over quota" }, { timeout: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof RemoteTaskError);
      assert.equal(err.remoteType, "QuotaError");
      assert.match(err.message, /over quota/);
      assert.match(err.remoteStack ?? "", /QuotaError: over quota\n\s+at /);
      assert.equal(err.retryable, true);
      return true;
    });
    await assert.rejects(c.call(fail, { message: "fatal" }, { timeout: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof RemoteTaskError);
      assert.equal(err.remoteType, "NonRetryableError");
      assert.equal(err.retryable, false);
      return true;
    });
  });

  test("client - send by name without a schema works (send_task)", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(add, ({ a, b }) => a * 0 + a + b);
    await w.start();
    await using c = await client(server, ns);
    assert.equal(await c.call("math.add", { a: 20, b: 1 }, { timeout: 10_000 }), 21);
    // The worker still validates what a schemaless sender sent.
    await assert.rejects(c.call("math.add", { a: "x" }, { timeout: 10_000 }), (err: unknown) => {
      assert.ok(err instanceof RemoteTaskError);
      assert.equal(err.remoteType, "InvalidArgumentsError");
      return true;
    });
  });

  test("worker - transforms run on the worker: the handler gets the schema's output type", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(parseDate, ({ at }) => ({ year: at.getUTCFullYear() }));
    await w.start();
    await using c = await client(server, ns);
    assert.deepEqual(await c.call(parseDate, { at: "2026-11-23T08:00:00Z" }, { timeout: 10_000 }), { year: 2026 });
  });

  test("worker - a result that breaks the result schema is a FAILURE and is dead-lettered", async () => {
    const ns = freshNamespace();
    // @ts-expect-error the handler returns the wrong shape on purpose
    await using w = worker(server, ns).implement(badResult, () => ({ ok: "yes" }));
    await w.start();
    await using c = await client(server, ns);
    await assert.rejects(c.call(badResult, {}, { timeout: 10_000 }), (err: unknown) => err instanceof RemoteTaskError && err.remoteType === "InvalidResultError");
    await eventually(async () => (await streamMessages(c, c.names.dlqStream)) === 1, 5000, "one dead letter");
  });

  test("worker - a result MessagePack cannot carry (a symbol, nesting past 1,000 levels) fails once and is dead-lettered, not rerun", async () => {
    const ns = freshNamespace();
    const anything = signature("core.anything", { args: v.object({ kind: v.string() }) });
    let runs = 0;
    await using w = worker(server, ns).implement(anything, ({ kind }) => {
      runs++;
      if (kind === "symbol") return { s: Symbol("x") };
      const deep: Record<string, unknown> = {};
      let at = deep;
      for (let i = 0; i < 1500; i++) at = (at.n = {}) as Record<string, unknown>;
      return deep;
    });
    await w.start();
    await using c = await client(server, ns);
    for (const kind of ["symbol", "deep"]) {
      await assert.rejects(c.call(anything, { kind }, { timeout: 10_000 }), (err: unknown) =>
        err instanceof RemoteTaskError && err.remoteType === "ResultNotEncodableError" && !err.retryable && /cannot be encoded/.test(err.message));
    }
    assert.match(String((await (async () => { try { await c.call(anything, { kind: "deep" }, { timeout: 10_000 }); } catch (e) { return (e as Error).message; } })())), /nested more than 1000 levels/);
    await eventually(async () => (await streamMessages(c, c.names.dlqStream)) === 3, 5000, "three dead letters");
    assert.equal(runs, 3, "each ran once: a result that cannot be stored is not retried");
    assert.equal(w.stats.failed, 3);
  });

  test("worker - an error whose details cannot be encoded (a cycle) fails once, its details replaced by a note", async () => {
    const ns = freshNamespace();
    const anything = signature("core.throws", { args: v.object({}) });
    let runs = 0;
    await using w = worker(server, ns).implement(anything, () => {
      runs++;
      const details: Record<string, unknown> = { why: "loop" };
      details.self = details;
      throw Object.assign(new NonRetryableError("bad input"), { details });
    });
    await w.start();
    await using c = await client(server, ns);
    const err = await c.call(anything, {}, { timeout: 10_000 }).then(() => undefined, (e: unknown) => e as RemoteTaskError);
    assert.ok(err instanceof RemoteTaskError, String(err));
    assert.match(err.message, /NonRetryableError: bad input/);
    assert.match(String((err.details as { omitted?: string })?.omitted), /details cannot be encoded/);
    await eventually(async () => (await streamMessages(c, c.names.dlqStream)) === 1, 5000, "one dead letter");
    assert.equal(runs, 1, "not rerun");
  });

  test("worker - bad messages are recorded, dead-lettered with their reason, and the worker keeps serving", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b);
    await w.start();
    await using c = await client(server, ns);
    const n = names(ns);
    const subject = n.taskSubject("default");
    const raw = async (data: Uint8Array, id?: string) => {
      const h = headers();
      if (id) {
        h.set(HEADER.msgId, id);
        h.set(HEADER.id, id);
      }
      await c.publisher.publish(subject, data, h);
    };
    const task = (id: string, over: Record<string, unknown>) =>
      encode({ v: PROTOCOL_VERSION, id, task: "math.add", args: { a: 1, b: 2 }, queue: "default", sentAt: Date.now(), ...over });
    await raw(new Uint8Array([0xc1, 0xff, 0x00]), "garbage-1"); // 0xc1 is never valid MessagePack
    await raw(task("wrong-args", { args: { a: "x" } }), "wrong-args");
    await raw(task("unknown-task", { task: "no.such.task" }), "unknown-task");
    await raw(task("future-version", { v: 99 }), "future-version");
    await raw(encode(["not", "a", "map"]));
    // Still serving.
    assert.equal(await c.call(add, { a: 2, b: 2 }, { timeout: 10_000 }), 4);
    await eventually(async () => (await streamMessages(c, n.dlqStream)) === 5, 10_000, "five dead letters");
    const jsm = await c.jsm();
    const reasons = new Map<string, string>();
    for (let seq = 1; seq <= 5; seq++) {
      const m = await jsm.streams.getMessage(n.dlqStream, { seq });
      reasons.set(m!.header?.get(HEADER.id) || "none", `${m!.header?.get(HEADER.dlqReason)}: ${m!.header?.get(HEADER.dlqDetail)}`);
    }
    assert.match(reasons.get("garbage-1")!, /^undecodable: message body is not valid MessagePack/);
    assert.match(reasons.get("wrong-args")!, /^invalid-args: invalid arguments for task "math.add": a: Invalid type/);
    assert.match(reasons.get("unknown-task")!, /^unknown-task: no handler for task "no.such.task"/);
    assert.match(reasons.get("future-version")!, /^unsupported-version: task message has protocol version 99/);
    assert.match(reasons.get("none")!, /^undecodable: task message is not a map/);
    // The failures are recorded under their ids, so a waiting caller learns why.
    for (const id of ["garbage-1", "wrong-args", "unknown-task"]) {
      const s = await c.status(id);
      assert.equal(s.state, STATE.failure, `${id} is FAILURE`);
    }
    assert.equal((await c.status("wrong-args")).record?.error?.type, "InvalidArgumentsError");
    assert.equal(await streamMessages(c, n.tasksStream), 0, "nothing left in the work queue");
    assert.equal(w.stats.deadLettered, 5);
    // The same reasons for a delayed task, found by the scheduler.
    const h = headers();
    h.set(HEADER.msgId, "future-delayed");
    await c.publisher.publish(n.scheduledSubject("default"), task("future-delayed", { v: 99, eta: Date.now() + 60_000 }), h);
    await eventually(async () => (await streamMessages(c, n.dlqStream)) === 6, 10_000, "the sixth dead letter");
    const sixth = await jsm.streams.getMessage(n.dlqStream, { seq: 6 });
    assert.match(`${sixth!.header?.get(HEADER.dlqReason)}: ${sixth!.header?.get(HEADER.dlqDetail)}`, /^unsupported-version: task message has protocol version 99/);
  });

  test("events - every sent task and state change reaches the events stream", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(add, ({ a, b }) => a + b).implement(fail, () => {
      throw new Error("boom");
    });
    await w.start();
    await using c = await client(server, ns);
    const ok = await c.send(add, { a: 1, b: 1 });
    await ok.result({ timeout: 10_000 });
    const bad = await c.send(fail, { message: "x" });
    await assert.rejects(bad.result({ timeout: 10_000 }));
    const events = await eventually(async () => {
      const all = await allEvents(c);
      return all.filter((e) => e.id === bad.id).some((e) => e.type === "task-dead-lettered") ? all : undefined;
    }, 5000, "events of both tasks");
    // Events come from two processes: stream order is arrival order, `at` gives the causal order
    // (to the millisecond: a tie, e.g. sent and received in the same ms, is ordered by type).
    const RANK: Record<string, number> = { "task-sent": 0, "task-received": 1, "task-started": 2, "task-succeeded": 3, "task-failed": 3, "task-dead-lettered": 3 };
    const typesOf = (id: string) => events.filter((e) => e.id === id).sort((x, y) => x.at - y.at || RANK[x.type]! - RANK[y.type]!).map((e) => e.type);
    assert.deepEqual(typesOf(ok.id), ["task-sent", "task-received", "task-started", "task-succeeded"]);
    assert.deepEqual(new Set(typesOf(bad.id)), new Set(["task-sent", "task-received", "task-started", "task-dead-lettered", "task-failed"]));
    const sent = events.find((e) => e.id === ok.id && e.type === "task-sent")!;
    assert.deepEqual(sent.args, { a: 1, b: 1 });
    assert.equal(events.find((e) => e.id === ok.id && e.type === "task-succeeded")!.result, 2);
  });

  test("events - large args and results: batches stay under max_payload and no event is lost", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns, { concurrency: 20 }).implement(echo, ({ text }) => text);
    await w.start();
    await using c = await client(server, ns);
    // 8 × 200 KB of args, then of results, inside one 20 ms batch window: 1.6 MB against a 1 MiB
    // max_payload. A task of 900 KB (it fits a message, not a message plus another event) too.
    const big = "x".repeat(200_000);
    const handles = await Promise.all(Array.from({ length: 8 }, (_, i) => c.send(echo, { text: `${i}${big}` })));
    const huge = await c.send(echo, { text: "h".repeat(900_000) });
    for (const h of [...handles, huge]) await h.result({ timeout: 20_000 });
    const ids = new Set([...handles, huge].map((h) => h.id));
    const events = await eventually(async () => {
      const all = (await allEvents(c)).filter((e) => ids.has(e.id));
      // Client and worker batches arrive independently: wait for both kinds.
      const count = (type: string) => all.filter((e) => e.type === type).length;
      return count("task-succeeded") === 9 && count("task-sent") === 9 ? all : undefined;
    }, 10_000, "task-sent and task-succeeded of all 9 tasks");
    const first = events.find((e) => e.type === "task-succeeded" && e.id === handles[0]!.id)!;
    assert.equal(first.result, `0${big}`, "a 200 KB result travels in its event");
    // The 900 KB one cannot travel with the event's own fields inside max_payload: the value is
    // left out and the event says so; the results bucket has it.
    const hugeDone = events.find((e) => e.type === "task-succeeded" && e.id === huge.id)!;
    assert.equal(hugeDone.result, undefined);
    assert.deepEqual(hugeDone.omitted, { result: 900_005 });
    const hugeSent = events.find((e) => e.type === "task-sent" && e.id === huge.id)!;
    assert.equal(hugeSent.args, undefined);
    assert.ok(hugeSent.omitted!.args! > 900_000);
    assert.equal(w.stats.succeeded, 9);
    assert.equal(c.eventsDropped, 0);
  });

  test("client - progress reports arrive by callback and by async iterator", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(slow, async ({ ms, steps }, ctx) => {
      for (let i = 1; i <= steps; i++) {
        await new Promise((r) => setTimeout(r, ms / steps));
        ctx.progress({ done: i, of: steps });
      }
      return { slept: ms };
    });
    await w.start();
    await using c = await client(server, ns);
    const handle = await c.send(slow, { ms: 400, steps: 4 });
    const seen: unknown[] = [];
    handle.onProgress((p) => seen.push(p));
    const iterated: unknown[] = [];
    for await (const p of handle.progress()) iterated.push(p);
    assert.deepEqual(await handle.result(), { slept: 400 });
    assert.ok(iterated.length >= 3, `iterator saw ${iterated.length} reports`);
    assert.deepEqual(iterated.at(-1), { done: 4, of: 4 });
    assert.ok(seen.length >= 3);
  });

  test("worker - a long task shows STARTED with worker identity while it runs", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns, { stateWriteDelayMs: 50 }).implement(slow, async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    });
    await w.start();
    await using c = await client(server, ns);
    const handle = await c.send(slow, { ms: 1500 });
    const started = await eventually(async () => {
      const s = await handle.status();
      return s.state === STATE.started ? s : undefined;
    }, 5000, "STARTED");
    assert.equal(started.record?.worker?.id, w.identity.id);
    assert.ok(started.record?.startedAt);
    await handle.result({ timeout: 10_000 });
    assert.equal((await handle.status()).state, STATE.success);
  });

  test("client - result({timeout}) rejects with ResultTimeoutError when no worker answers", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    const handle = await c.send(add, { a: 1, b: 1 });
    await assert.rejects(handle.result({ timeout: 200 }), (err: unknown) => err instanceof ResultTimeoutError && err.taskId === handle.id);
  });

  test("protocol - a result written by a newer protocol version fails result() at once, by reply or from the bucket", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    const newer = (id: string) => encode({ kind: "result", v: PROTOCOL_VERSION + 1, id, task: add.name, state: "SUCCESS", result: "?" });
    // Stored in the bucket, read by a client that did not send the task (status, then result).
    const stored = await c.send(add, { a: 1, b: 1 });
    await c.publisher.publish(c.names.resultSubject(stored.id), newer(stored.id));
    await using other = await client(server, ns);
    await assert.rejects(other.status(stored.id), UnsupportedVersionError);
    const t0 = Date.now();
    await assert.rejects(other.waitForRecord(stored.id, 20_000), UnsupportedVersionError);
    assert.ok(Date.now() - t0 < 10_000, "refused, not waited out");
    // As a reply to a caller waiting in call() (no worker runs here: the test replies).
    const calling = c.call(add, { a: 2, b: 2 }, { timeout: 20_000 });
    calling.catch(() => {});
    const jsm = await c.jsm();
    await eventually(async () => (await jsm.streams.info(c.names.tasksStream)).state.messages === 2, 10_000, "the called task stored");
    const called = await lastStoredTask(c);
    assert.ok(called.replyTo, "call() sends its reply subject");
    c.nc.publish(called.replyTo, newer(called.id));
    await assert.rejects(calling, UnsupportedVersionError);
  });

  test("protocol - a task id doubles as Nats-Msg-Id: a re-sent task is stored once", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    await c.send(add, { a: 1, b: 1 }, { id: "order-42" });
    await c.send(add, { a: 1, b: 1 }, { id: "order-42" });
    assert.equal(await streamMessages(c, c.names.tasksStream), 1);
  });

  test("worker - a graceful close finishes the running task, stores its result and acks it", async () => {
    const ns = freshNamespace();
    const w = worker(server, ns).implement(slow, async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    });
    await w.start();
    await using c = await client(server, ns);
    const handle = await c.send(slow, { ms: 500 });
    await eventually(() => w.active === 1, 5000, "the task to start");
    await w.close();
    assert.equal((await c.status(handle.id)).state, STATE.success);
    assert.equal(await streamMessages(c, c.names.tasksStream), 0, "acked after the result was stored");
  });

  test("worker - a cold close returns the running task to the queue and another worker completes it", async () => {
    const ns = freshNamespace();
    let runs = 0;
    const impl = async ({ ms }: { ms: number }) => {
      runs++;
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    };
    const first = worker(server, ns).implement(slow, impl);
    await first.start();
    await using c = await client(server, ns);
    const handle = await c.send(slow, { ms: 800 });
    await eventually(() => first.active === 1, 5000, "the task to start");
    await first.close({ graceMs: 0 });
    await using second = worker(server, ns).implement(slow, impl);
    await second.start();
    assert.deepEqual(await handle.result({ timeout: 10_000 }), { slept: 800 });
    assert.equal(runs, 2);
  });

  test("worker - with prefetch 1 a worker holds one message, so a second worker takes the next", async () => {
    const ns = freshNamespace();
    const ran: string[] = [];
    const mk = (label: string) => worker(server, ns, { concurrency: 1, prefetch: 1 }).implement(slow, async ({ ms }) => {
      ran.push(label);
      await new Promise((r) => setTimeout(r, ms));
      return { slept: ms };
    });
    await using a = mk("a");
    await a.start();
    await using c = await client(server, ns);
    const first = await c.send(slow, { ms: 1500 });
    await eventually(() => a.active === 1, 5000, "a to start");
    const second = await c.send(slow, { ms: 10 });
    await using b = mk("b");
    await b.start();
    await second.result({ timeout: 10_000 });
    assert.deepEqual(ran, ["a", "b"], "the second task ran on b while a was busy");
    await first.result({ timeout: 10_000 });
  });

  test("worker - with no prefetch set, short tasks widen the window to 4x concurrency; messages stuck behind a long task go back to another worker", async () => {
    const ns = freshNamespace();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const ran: { label: string; ms: number; deliveryCount: number }[] = [];
    const mk = (label: string) => worker(server, ns, { concurrency: 1 }).implement(slow, async ({ ms }, ctx) => {
      ran.push({ label, ms, deliveryCount: ctx.deliveryCount });
      if (ms > 0) await gate;
      return { slept: ms };
    });
    await using a = mk("a");
    await a.start();
    await using c = await client(server, ns);
    const me = { destination: { workers: [a.identity.id] } };
    assert.deepEqual((await c.inspect("queues", me))[a.identity.id], { default: { concurrency: 1, prefetch: 1, prefetchMax: 4, serial: false, paused: false } });
    const warmup = await Promise.all(Array.from({ length: 20 }, () => c.send(slow, { ms: 0 })));
    for (const h of warmup) await h.result({ timeout: 10_000 });
    assert.equal(((await c.inspect("queues", me))[a.identity.id] as { default: { prefetch: number } }).default.prefetch, 4, "short tasks widened the window");
    // A long task, then three short ones: a holds them (window 4) while the long one runs.
    const long = await c.send(slow, { ms: 1 });
    await eventually(() => a.active === 1, 5000, "the long task to start");
    const shorts = [];
    for (let i = 0; i < 3; i++) shorts.push(await c.send(slow, { ms: 0 }));
    await eventually(() => a.stats.received === 24, 5000, "a to hold the three short tasks");
    await using b = mk("b");
    await b.start();
    // After HAND_BACK_AFTER_MS waiting, a hands them back and b runs them while a is still busy.
    for (const h of shorts) await h.result({ timeout: 10_000 });
    assert.equal(a.active, 1, "the long task still runs on a");
    const onB = ran.filter((r) => r.label === "b");
    assert.equal(onB.length, 3, `the short tasks ran on b: ${JSON.stringify(ran.slice(20))}`);
    assert.ok(onB.every((r) => r.deliveryCount === 2), "each was delivered to a first, then handed back");
    assert.equal(((await c.inspect("queues", me))[a.identity.id] as { default: { prefetch: number } }).default.prefetch, 1, "a's window fell back to its concurrency");
    release();
    assert.deepEqual(await long.result({ timeout: 10_000 }), { slept: 1 });
  });

  test("worker - a late RECEIVED write (its publish slowed) never replaces the SUCCESS another worker stored meanwhile", async () => {
    const ns = freshNamespace();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const mk = () => worker(server, ns, { concurrency: 1, stateWriteDelayMs: 50 }).implement(slow, async ({ ms }) => {
      if (ms > 0) await gate;
      return { slept: ms };
    });
    await using a = mk();
    await a.start();
    await using c = await client(server, ns);
    for (const h of await Promise.all(Array.from({ length: 20 }, () => c.send(slow, { ms: 0 })))) await h.result({ timeout: 10_000 });
    // From now on a's RECEIVED/STARTED writes take 2.5 s to reach the server (a leader election).
    const publisher = a.client.publisher;
    const publish = publisher.publish.bind(publisher);
    const prefix = a.client.names.resultSubject("");
    publisher.publish = async (subject, data, h) => {
      if (subject.startsWith(prefix) && ["RECEIVED", "STARTED"].includes(decodeResultRecord(data).state)) await new Promise((r) => setTimeout(r, 2500));
      return publish(subject, data, h);
    };
    const long = await c.send(slow, { ms: 1 });
    await eventually(() => a.active === 1, 5000, "the long task to start");
    const shorts = [];
    for (let i = 0; i < 3; i++) shorts.push(await c.send(slow, { ms: 0 }));
    await eventually(() => a.stats.received === 24, 5000, "a to hold the three short tasks");
    await using b = mk();
    await b.start();
    for (const h of shorts) await h.result({ timeout: 10_000 }); // handed back by a, run by b
    await new Promise((r) => setTimeout(r, 3000)); // a's slowed RECEIVED writes have landed (or been refused)
    await using reader = await client(server, ns);
    for (const h of shorts) assert.equal((await reader.status(h.id)).state, "SUCCESS", `${h.id}: the final record stays`);
    release();
    await long.result({ timeout: 10_000 });
  });

  test("worker - an idle queue's window falls back to its concurrency: credits beyond it lapse within seconds", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns, { concurrency: 2 }).implement(slow, ({ ms }) => ({ slept: ms }));
    await w.start();
    await using c = await client(server, ns);
    for (const h of await Promise.all(Array.from({ length: 10 }, () => c.send(slow, { ms: 0 })))) await h.result({ timeout: 10_000 });
    assert.equal(w.queueOptions.get("default")?.prefetch, 8, "short tasks widened the window");
    // The pull asking for the extra credits expires (2 s) unfilled: the queue is idle.
    await eventually(() => w.queueOptions.get("default")?.prefetch === 2, 8000, "the window to fall back when idle");
    // The next task is served as usual, and widens the window again.
    assert.deepEqual(await c.call(slow, { ms: 0 }, { timeout: 10_000 }), { slept: 0 });
    assert.equal(w.queueOptions.get("default")?.prefetch, 8);
  });

  test("worker - rate-limited tasks wait for tokens in their slots: the window does not grow, nothing is handed back", async () => {
    const ns = freshNamespace();
    const deliveries: number[] = [];
    await using w = worker(server, ns, { concurrency: 4 }).implement(limited, ({ i }, ctx) => {
      deliveries.push(ctx.deliveryCount);
      return i;
    });
    await w.start();
    await using c = await client(server, ns);
    const handles = await Promise.all(Array.from({ length: 30 }, (_, i) => c.send(limited, { i })));
    for (const h of handles) await h.result({ timeout: 20_000 });
    assert.equal(deliveries.length, 30);
    assert.deepEqual(deliveries.filter((d) => d !== 1), [], "no task was handed back and delivered again");
    assert.equal(w.queueOptions.get("default")?.prefetch, 4);
  });

  test("worker - a task handed back while its slot waits (rate limit) does not run on the closing worker", async () => {
    const ns = freshNamespace();
    const onFirst: number[] = [];
    const first = worker(server, ns, { concurrency: 2, prefetch: 2 }).implement(throttled, ({ i }) => {
      onFirst.push(i);
      return i;
    });
    await first.start();
    await using c = await client(server, ns);
    // 2/s with a full bucket: tasks 0 and 1 run at once; 2 and 3 take both slots and wait for tokens.
    const handles = [];
    for (let i = 0; i < 4; i++) handles.push(await c.send(throttled, { i }));
    await eventually(() => onFirst.length === 2 && first.stats.received === 4, 5000, "two run, two waiting in their slots");
    // close() hands the two waiting messages back at once; their slots still wait for tokens.
    await first.close({ graceMs: 5000 });
    await using second = worker(server, ns, { concurrency: 2 }).implement(throttled, ({ i }) => i);
    await second.start();
    assert.deepEqual(await Promise.all(handles.map((h) => h.result({ timeout: 20_000 }))), [0, 1, 2, 3]);
    assert.deepEqual(onFirst.sort(), [0, 1], "the handed-back tasks did not run on the closing worker");
    assert.equal(second.stats.succeeded, 2);
  });

  /** A slow server, for results only: each result store of `w` waits `ms` before it is published. */
  function delayResultStores(w: Worker, ms: number): void {
    const publisher = w.client.publisher;
    const publish = publisher.publish.bind(publisher);
    const resultsPrefix = w.client.names.resultSubject("");
    publisher.publish = async (subject, data, h) => {
      if (subject.startsWith(resultsPrefix)) await new Promise((r) => setTimeout(r, ms));
      return publish(subject, data, h);
    };
  }

  test("worker - a finished task hands its slot on while its result is stored, at most prefetch of them at once", async () => {
    const ns = freshNamespace();
    const spans: { start: number; end: number }[] = [];
    await using w = worker(server, ns, { concurrency: 1, prefetch: 1 }).implement(slow, ({ ms }) => {
      spans.push({ start: Date.now(), end: Date.now() });
      return { slept: ms };
    });
    await w.start();
    const STORE_MS = 1500;
    delayResultStores(w, STORE_MS);
    await using c = await client(server, ns);
    const handles = [];
    for (let i = 0; i < 3; i++) handles.push(await c.send(slow, { ms: i }));
    for (const h of handles) await h.result({ timeout: 20_000 });
    assert.equal(spans.length, 3);
    const [t1, t2, t3] = spans as [{ start: number; end: number }, { start: number; end: number }, { start: number; end: number }];
    // Task 2 did not wait for task 1's store...
    assert.ok(t2.start - t1.end < STORE_MS - 500, `task 2 started ${t2.start - t1.end} ms after task 1 ended`);
    // ...but task 3 did wait for a store: with prefetch 1, one outcome at a time may be in commit.
    assert.ok(t3.start - t2.end >= STORE_MS - 300, `task 3 started ${t3.start - t2.end} ms after task 2 ended`);
    // The reply beats the store, so the last ack follows the last result() by about STORE_MS.
    const jsm = await c.jsm();
    const acked = async () => (await jsm.consumers.info(c.names.tasksStream, c.names.queueConsumer("default"))).num_ack_pending === 0;
    await eventually(acked, 10_000, "every message acked once its result was stored");
    assert.equal(w.stats.succeeded, 3);
    // Read from the results bucket by a client that did not send them (no cached replies).
    await using reader = await client(server, ns);
    for (const h of handles) assert.equal((await reader.status(h.id)).state, "SUCCESS");
  });

  test("worker - a backlog of synchronous tasks behind a slow one runs without nesting calls", async () => {
    const ns = freshNamespace();
    const N = 3000;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await using w = worker(server, ns, { concurrency: 1, prefetch: N + 1 })
      .implement(slow, () => gate.then(() => ({ slept: 0 })))
      .implement(add, ({ a, b }) => a + b);
    await w.start();
    await using c = await client(server, ns);
    const first = await c.send(slow, { ms: 0 });
    await eventually(() => w.active === 1, 5000, "the slow task to start");
    const handles = await Promise.all(Array.from({ length: N }, (_, i) => c.send(add, { a: i, b: 1 })));
    // Every one of them delivered and waiting behind the slow task, then released at once.
    await eventually(() => w.stats.received === N + 1, 20_000, "the backlog to be delivered");
    release();
    await first.result({ timeout: 20_000 });
    const results = await Promise.all(handles.map((h) => h.result({ timeout: 60_000 })));
    assert.deepEqual(results.slice(0, 3), [1, 2, 3]);
    assert.equal(w.stats.succeeded, N + 1);
    assert.equal(w.stats.failed, 0);
  });

  test("worker - close() waits for outcomes still being stored after their handler finished", async () => {
    const ns = freshNamespace();
    let finished = 0;
    const w = worker(server, ns, { concurrency: 2 }).implement(slow, ({ ms }) => {
      finished++;
      return { slept: ms };
    });
    await w.start();
    delayResultStores(w, 1000);
    await using c = await client(server, ns);
    const handles = [await c.send(slow, { ms: 1 }), await c.send(slow, { ms: 2 })];
    await eventually(() => finished === 2, 5000, "both handlers to finish");
    await w.close({ graceMs: 10_000 });
    const info = await (await c.jsm()).consumers.info(c.names.tasksStream, c.names.queueConsumer("default"));
    assert.equal(info.num_ack_pending, 0, "both acked before close() resolved");
    assert.equal(info.num_pending, 0);
    await using reader = await client(server, ns);
    for (const h of handles) assert.equal((await reader.status(h.id)).state, "SUCCESS");
  });
});
