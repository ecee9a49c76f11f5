/** Delivery guarantees against a real nats-server: retries, ETA, expiry, revoke, idempotency, long tasks, reconnect. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { RemoteTaskError, signature, STATE, TaskRevokedError } from "../../sdk/client/mod.ts";
import { NonRetryableError } from "../../sdk/worker/mod.ts";
import { encode, PROTOCOL_VERSION, ProtocolError } from "../../sdk/protocol/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const flaky = signature("test.flaky", {
  args: v.object({ failTimes: v.number(), kind: v.optional(v.string(), "Error") }),
  result: v.object({ attempts: v.number() }),
  retries: 3,
  retryDelay: 0.05,
});
const stamp = signature("test.stamp", { args: v.object({ tag: v.string() }), result: v.number() });
const wait = signature("test.wait", { args: v.object({ ms: v.number() }), result: v.string() });

describe("guarantees", () => {
  test("retries - a failing task is retried with backoff and succeeds; the attempt number travels", async () => {
    const ns = freshNamespace();
    const seen: { attempt: number; retries: number; at: number }[] = [];
    await using w = worker(server, ns).implement(flaky, ({ failTimes }, ctx) => {
      seen.push({ attempt: ctx.attempt, retries: ctx.retries, at: Date.now() });
      if (ctx.retries < failTimes) throw new Error(`fail ${ctx.retries}`);
      return { attempts: ctx.attempt };
    });
    await w.start();
    await using c = await client(server, ns);
    assert.deepEqual(await c.call(flaky, { failTimes: 2 }, { timeout: 15_000 }), { attempts: 3 });
    assert.deepEqual(seen.map((s) => s.retries), [0, 1, 2]);
    // Backoff: the second gap is at least the first retryDelay's lower bound, doubled (with jitter 0.5..1).
    assert.ok(seen[1]!.at - seen[0]!.at >= 25 && seen[2]!.at - seen[1]!.at >= 50, `gaps ${seen[1]!.at - seen[0]!.at} ${seen[2]!.at - seen[1]!.at}`);
    assert.equal(w.stats.retried, 2);
  });

  test("retries - exhausted retries end in FAILURE and a dead letter; NonRetryableError is not retried", async () => {
    const ns = freshNamespace();
    let runs = 0;
    await using w = worker(server, ns).implement(flaky, ({ kind }) => {
      runs++;
      if (kind === "fatal") throw new NonRetryableError("bad input upstream");
      throw new Error("always");
    });
    await w.start();
    await using c = await client(server, ns);
    await assert.rejects(c.call(flaky, { failTimes: 99 }, { timeout: 15_000 }), (e: unknown) => e instanceof RemoteTaskError && /always/.test(e.message));
    assert.equal(runs, 4, "first run + 3 retries");
    runs = 0;
    await assert.rejects(c.call(flaky, { failTimes: 99, kind: "fatal" }, { timeout: 15_000 }), (e: unknown) => e instanceof RemoteTaskError && e.remoteType === "NonRetryableError");
    assert.equal(runs, 1);
    await eventually(async () => (await (await c.jsm()).streams.info(c.names.dlqStream)).state.messages === 2, 5000, "two dead letters");
  });

  test("retries - autoretryFor limits retries to the named errors; per-call retries override", async () => {
    const ns = freshNamespace();
    let runs = 0;
    class TimeoutError extends Error {
      override name = "TimeoutError";
    }
    await using w = worker(server, ns).implement(flaky, ({ kind }) => {
      runs++;
      throw kind === "timeout" ? new TimeoutError("slow upstream") : new TypeError("bug");
    });
    await w.start();
    await using c = await client(server, ns);
    await assert.rejects(c.call(flaky, { failTimes: 9, kind: "type" }, { autoretryFor: ["TimeoutError"], timeout: 15_000 }));
    assert.equal(runs, 1, "a TypeError is not in autoretryFor: no retry");
    runs = 0;
    await assert.rejects(c.call(flaky, { failTimes: 9, kind: "timeout" }, { autoretryFor: ["TimeoutError"], retries: 1, timeout: 15_000 }));
    assert.equal(runs, 2, "TimeoutError retried once (per-call retries: 1)");
  });

  test("retries - ctx.retry() schedules a retry with its delay; past the limit it fails with MaxRetriesExceededError", async () => {
    const ns = freshNamespace();
    const at: number[] = [];
    const poll = signature("test.poll", { args: v.object({ readyAfter: v.number() }), result: v.string(), retries: 5 });
    await using w = worker(server, ns).implement(poll, ({ readyAfter }, ctx) => {
      at.push(Date.now());
      if (ctx.retries < readyAfter) return ctx.retry({ delay: 0.2, reason: "not ready yet" });
      return "done";
    });
    await w.start();
    await using c = await client(server, ns);
    assert.equal(await c.call(poll, { readyAfter: 2 }, { timeout: 15_000 }), "done");
    assert.ok(at[1]! - at[0]! >= 180, `retry delay honoured (${at[1]! - at[0]!} ms)`);
    await assert.rejects(c.call(poll, { readyAfter: 99 }, { retries: 1, timeout: 15_000 }), (e: unknown) => e instanceof RemoteTaskError && e.remoteType === "MaxRetriesExceededError");
  });

  test("eta - a countdown task waits in the scheduled stream, not in a worker, and runs on time", async () => {
    const ns = freshNamespace();
    const ranAt: number[] = [];
    await using w = worker(server, ns, { prefetch: 1 }).implement(stamp, () => {
      ranAt.push(Date.now());
      return Date.now();
    });
    await w.start();
    await using c = await client(server, ns);
    const sentAt = Date.now();
    const later = await c.send(stamp, { tag: "later" }, { countdown: 1.5 });
    const jsm = await c.jsm();
    assert.equal((await jsm.streams.info(c.names.scheduledStream)).state.messages, 1, "held by the server");
    // While it waits, the worker holds nothing: a task sent now runs at once.
    assert.ok(await c.call(stamp, { tag: "now" }, { timeout: 5000 }));
    await later.result({ timeout: 10_000 });
    const delay = ranAt[1]! - sentAt;
    assert.ok(delay >= 1500 && delay < 2500, `ran ${delay} ms after sending (due at 1500, within 1 s)`);
    assert.equal((await jsm.streams.info(c.names.scheduledStream)).state.messages, 0);
  });

  test("eta - an invalid eta or countdown is refused at the client, naming the option, and nothing is stored", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns, { events: false });
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ eta: new Date("next tuesday") }, /option "eta" = an invalid Date must be a valid Date or epoch milliseconds/],
      [{ eta: "2099-01-01T00:00:00Z" }, /option "eta" = "2099-01-01T00:00:00Z" must be a valid Date/],
      [{ eta: Number.NaN }, /option "eta"/],
      [{ countdown: Number.NaN }, /option "countdown" = null must be a non-negative number of seconds/],
      [{ countdown: "10" }, /option "countdown" = "10"/],
      [{ countdown: -1 }, /option "countdown" = -1/],
      [{ eta: Date.now() + 1000, countdown: 1 }, /give "eta" or "countdown", not both/],
    ];
    for (const [options, message] of bad) {
      await assert.rejects(c.send(stamp, { tag: "bad" }, options as never), (err: Error) => err instanceof ProtocolError && message.test(err.message), JSON.stringify(options));
    }
    const jsm = await c.jsm();
    await c.ensureTopology();
    for (const stream of [c.names.tasksStream, c.names.scheduledStream]) assert.equal((await jsm.streams.info(stream)).state.messages, 0, stream);
  });

  test("eta - a task due in a few ms (scheduler slack, or sent straight to its queue) still never starts before its ETA", async () => {
    const ns = freshNamespace();
    const ranAt: number[] = [];
    await using w = worker(server, ns).implement(stamp, () => {
      ranAt.push(Date.now());
      return Date.now();
    });
    await w.start();
    await using c = await client(server, ns);
    // Within the 50 ms a worker runs rather than defers, published to the queue as the scheduler does.
    for (const ahead of [40, 20, 5]) {
      const id = `eta-${ahead}-${Date.now()}`;
      const eta = Date.now() + ahead;
      await c.publisher.publish(c.names.taskSubject("default"), encode({ v: PROTOCOL_VERSION, id, task: stamp.name, args: { tag: "soon" }, queue: "default", sentAt: Date.now(), eta }));
      await eventually(async () => (await c.status(id)).state === STATE.success, 10_000, `${id} to run`);
      assert.ok(ranAt.at(-1)! >= eta, `started ${eta - ranAt.at(-1)!} ms before its ETA (${ahead} ms ahead when sent)`);
    }
  });

  test("eta - a delayed task survives a worker restart and a server restart", async () => {
    const ns = freshNamespace();
    const restartable = await NatsServer.start();
    try {
      await using c = await client(restartable, ns);
      const eta = new Date(Date.now() + 2500);
      const h = await c.send(stamp, { tag: "x" }, { eta });
      {
        await using w = worker(restartable, ns).implement(stamp, () => Date.now());
        await w.start();
        await new Promise((r) => setTimeout(r, 500)); // the scheduler has seen it and delayed it
      }
      await restartable.restart();
      await using w2 = worker(restartable, ns).implement(stamp, () => Date.now());
      await w2.start();
      const ranAt = await h.result({ timeout: 40_000 });
      assert.ok(ranAt >= eta.getTime(), "not before its ETA");
    } finally {
      await restartable.stop();
    }
  });

  test("expires - an expired task is not run and is recorded REVOKED with the reason", async () => {
    const ns = freshNamespace();
    let runs = 0;
    await using c = await client(server, ns);
    const h = await c.send(stamp, { tag: "old" }, { expires: 0.2 });
    await new Promise((r) => setTimeout(r, 400));
    await using w = worker(server, ns).implement(stamp, () => ++runs);
    await w.start();
    await assert.rejects(h.result({ timeout: 10_000 }), (e: unknown) => e instanceof TaskRevokedError && /expired/.test(e.message));
    assert.equal(runs, 0);
    assert.equal((await h.status()).state, STATE.revoked);
  });

  test("revoke - a queued task revoked before any worker starts is never run", async () => {
    const ns = freshNamespace();
    let runs = 0;
    await using c = await client(server, ns);
    const h = await c.send(stamp, { tag: "doomed" });
    await c.revoke(h.id, { reason: "operator said no" });
    await using w = worker(server, ns).implement(stamp, () => ++runs);
    await w.start();
    await assert.rejects(h.result({ timeout: 10_000 }), (e: unknown) => e instanceof TaskRevokedError && /operator said no/.test(e.message));
    assert.equal(runs, 0);
    // The worker keeps serving.
    assert.equal(await c.call(stamp, { tag: "fine" }, { timeout: 5000 }), 1);
  });

  test("revoke - a running task has its signal aborted and ends REVOKED, not retried or dead-lettered", async () => {
    const ns = freshNamespace();
    let sawAbort = "";
    await using w = worker(server, ns).implement(wait, async ({ ms }, ctx) => {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, ms);
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          sawAbort = (ctx.signal.reason as Error).name;
          reject(ctx.signal.reason);
        });
      });
      return "finished";
    });
    await w.start();
    await using c = await client(server, ns);
    const h = await c.send(wait, { ms: 10_000 });
    await eventually(() => w.active === 1, 5000, "the task to start");
    await c.revoke(h.id);
    await assert.rejects(h.result({ timeout: 5000 }), TaskRevokedError);
    assert.equal(sawAbort, "TaskRevokedError");
    assert.equal((await (await c.jsm()).streams.info(c.names.dlqStream)).state.messages, 0);
  });

  test("idempotency - sends with the same key within the window are stored once and share a result", async () => {
    const ns = freshNamespace();
    let runs = 0;
    await using c = await client(server, ns);
    const a = await c.send(stamp, { tag: "pay" }, { idempotencyKey: "invoice 2026/11/23 #7" });
    const b = await c.send(stamp, { tag: "pay" }, { idempotencyKey: "invoice 2026/11/23 #7" });
    assert.equal(a.id, b.id);
    assert.equal((await (await c.jsm()).streams.info(c.names.tasksStream)).state.messages, 1);
    await using w = worker(server, ns).implement(stamp, () => ++runs);
    await w.start();
    assert.equal(await a.result({ timeout: 5000 }), 1);
    assert.equal(await b.result({ timeout: 5000 }), 1);
    // After the worker consumed it, the key is still remembered within the window.
    const again = await c.send(stamp, { tag: "pay" }, { idempotencyKey: "invoice 2026/11/23 #7" });
    assert.equal(again.id, a.id);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(runs, 1);
  });

  test("long tasks - a task running longer than the ack wait is not redelivered (heartbeats)", async () => {
    const ns = freshNamespace();
    let runs = 0;
    await using w = worker(server, ns, { ackWait: 1 }).implement(wait, async ({ ms }) => {
      runs++;
      await new Promise((r) => setTimeout(r, ms));
      return "ok";
    });
    await w.start();
    await using c = await client(server, ns, { ackWait: 1 });
    assert.equal(await c.call(wait, { ms: 3500 }, { timeout: 15_000 }), "ok");
    assert.equal(runs, 1);
  });

  test("reconnect - a pending call completes across a nats-server restart", async () => {
    const ns = freshNamespace();
    const restartable = await NatsServer.start();
    try {
      await using w = worker(restartable, ns).implement(wait, async ({ ms }) => {
        await new Promise((r) => setTimeout(r, ms));
        return "survived";
      });
      await w.start();
      await using c = await client(restartable, ns);
      const pending = c.call(wait, { ms: 1500 }, { timeout: 60_000 });
      await eventually(() => w.active === 1, 5000, "the task to start");
      await restartable.restart();
      assert.equal(await pending, "survived");
      // And new work flows after the restart.
      assert.equal(await c.call(wait, { ms: 1 }, { timeout: 30_000 }), "survived");
    } finally {
      await restartable.stop();
    }
  });
});
