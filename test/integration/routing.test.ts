/** Routing, declared and serial queues, per-queue concurrency, and prefetch against a real server. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { Router, signature, UnknownQueueError } from "../../sdk/client/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const job = signature("images.resize", { args: v.object({ ms: v.number(), tag: v.optional(v.string(), "") }), result: v.string() });

describe("routing", () => {
  test("routing - call > signature > exact route > longest glob > function > first segment > default", () => {
    const sig = signature("images.thumb", { queue: "imgq" });
    const r = new Router(
      { routes: { "reports.daily": "slow", "reports.*": "reports", "reports.pdf.*": "pdf" }, routeByFirstSegment: true, queues: undefined },
      (name) => (name.startsWith("fn.") ? "fnq" : undefined),
    );
    assert.deepEqual(r.route("images.thumb", sig, "override"), { queue: "override", source: "call" });
    assert.deepEqual(r.route("images.thumb", sig), { queue: "imgq", source: "signature" });
    assert.deepEqual(r.route("reports.daily"), { queue: "slow", source: "route" });
    assert.deepEqual(r.route("reports.pdf.render"), { queue: "pdf", source: "route" }, "the longer glob wins");
    assert.deepEqual(r.route("reports.weekly"), { queue: "reports", source: "route" });
    assert.deepEqual(r.route("fn.x"), { queue: "fnq", source: "function" });
    assert.deepEqual(r.route("billing.charge"), { queue: "billing", source: "first-segment" });
    assert.deepEqual(r.route("plain"), { queue: "default", source: "default" });
    assert.deepEqual(new Router({ routeByFirstSegment: false, routes: undefined, queues: undefined }).route("billing.charge"), { queue: "default", source: "default" });
  });

  test("routing - a send to a queue nothing serves or declares is refused with a clear error", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns, { routeByFirstSegment: true });
    await assert.rejects(c.send("billing.charge", {}), (e: unknown) => e instanceof UnknownQueueError && e.queue === "billing" && /no worker serves/.test(e.message));
    await assert.rejects(c.send(job, { ms: 1 }, { queue: "typo" }), UnknownQueueError);
    // A typed signature is a shared contract: its queue is trusted before any worker starts.
    await c.send(job, { ms: 1 });
    // A declared queue, or one a worker has served, is accepted.
    await using declared = await client(server, ns, { queues: { typo: {} } });
    await declared.send(job, { ms: 1 }, { queue: "typo" });
    await using w = worker(server, ns, { queues: ["billing"], routeByFirstSegment: true });
    await w.start();
    await c.send("billing.charge", {});
  });

  test("routing - settings routes send tasks to the worker of the routed queue", async () => {
    const ns = freshNamespace();
    const routes = { "images.*": "gpu" };
    await using w = worker(server, ns, { routes }).implement(job, ({ tag }, ctx) => `${tag}@${ctx.queue}`);
    await w.start();
    assert.deepEqual(w.queues, ["gpu"], "the worker listens where its tasks are routed");
    await using c = await client(server, ns, { routes });
    assert.equal(await c.call(job, { ms: 0, tag: "a" }, { timeout: 5000 }), "a@gpu");
  });
});

describe("queues", () => {
  test("queues - a serial queue runs one task at a time across all workers (server-enforced)", async () => {
    const ns = freshNamespace();
    let running = 0;
    let maxRunning = 0;
    const impl = async ({ ms }: { ms: number }) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      await sleep(ms);
      running--;
      return "ok";
    };
    const queues = { superevent: { serial: true } };
    await using a = worker(server, ns, { queues, concurrency: 4 }).implement(job, impl);
    await using b = worker(server, ns, { queues, concurrency: 4 }).implement(job, impl);
    await a.start();
    await b.start();
    await using c = await client(server, ns, { queues });
    const handles = await Promise.all(Array.from({ length: 8 }, () => c.send(job, { ms: 40 }, { queue: "superevent" })));
    await Promise.all(handles.map((h) => h.result({ timeout: 20_000 })));
    assert.equal(maxRunning, 1);
    const info = await (await c.jsm()).consumers.info(c.names.tasksStream, c.names.queueConsumer("superevent"));
    assert.equal(info.config.max_ack_pending, 1);
  });

  test("queues - one worker serves several queues with separate concurrency for each", async () => {
    const ns = freshNamespace();
    const running = new Map<string, number>();
    const peak = new Map<string, number>();
    await using w = worker(server, ns, { concurrency: 6, queues: { openmp: { concurrency: 1 }, general: { concurrency: 4 } } }).implement(job, async ({ ms }, ctx) => {
      running.set(ctx.queue, (running.get(ctx.queue) ?? 0) + 1);
      peak.set(ctx.queue, Math.max(peak.get(ctx.queue) ?? 0, running.get(ctx.queue)!));
      await sleep(ms);
      running.set(ctx.queue, running.get(ctx.queue)! - 1);
      return ctx.queue;
    });
    await w.start();
    await using c = await client(server, ns);
    const hs = await Promise.all([
      ...Array.from({ length: 4 }, () => c.send(job, { ms: 100 }, { queue: "openmp" })),
      ...Array.from({ length: 8 }, () => c.send(job, { ms: 100 }, { queue: "general" })),
    ]);
    await Promise.all(hs.map((h) => h.result({ timeout: 20_000 })));
    assert.equal(peak.get("openmp"), 1);
    assert.equal(peak.get("general"), 4);
  });

  test("queues - a worker holds no more than its prefetch: the rest stay on the server", async () => {
    const ns = freshNamespace();
    let started = 0;
    await using w = worker(server, ns, { concurrency: 2, prefetch: 3 }).implement(job, async ({ ms }) => {
      started++;
      await sleep(ms);
      return "ok";
    });
    await w.start();
    await using c = await client(server, ns);
    await Promise.all(Array.from({ length: 10 }, () => c.send(job, { ms: 1500 })));
    await eventually(() => started === 2, 5000, "two tasks running");
    await sleep(300);
    const info = await (await c.jsm()).consumers.info(c.names.tasksStream, c.names.queueConsumer("default"));
    assert.equal(info.num_ack_pending, 3, "2 running + 1 waiting in the worker");
    assert.equal(info.num_pending, 7, "the other 7 still on the server");
  });
});

describe("priorities", () => {
  test("priorities - a high-priority task sent behind 2,000 low-priority ones starts within the next few", async () => {
    const ns = freshNamespace();
    const order: string[] = [];
    const queues = { urgent: { priorities: true, concurrency: 1, prefetch: 1 } };
    await using c = await client(server, ns, { queues });
    const w = worker(server, ns, { queues }).implement(job, async ({ tag }) => {
      order.push(tag);
      return tag;
    });
    await w.start();
    await c.control("pause_queue", { queue: "urgent" });
    await Promise.all(Array.from({ length: 2000 }, (_, i) => c.send(job, { ms: 0, tag: `low${i}` }, { queue: "urgent" })));
    const vip = await c.send(job, { ms: 0, tag: "vip" }, { queue: "urgent", priority: 9 });
    await c.control("resume_queue", { queue: "urgent" });
    await vip.result({ timeout: 20_000 });
    assert.ok(order.indexOf("vip") <= 3, `vip started as task #${order.indexOf("vip") + 1}`);
    await w.close({ graceMs: 0 });
  });
});
