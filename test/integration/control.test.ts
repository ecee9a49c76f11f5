/** Worker registry, remote inspect/control (every verb), service discovery and rate limits. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature } from "../../sdk/client/mod.ts";
import { main } from "../../sdk/cli/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nap = signature("ctl.nap", { args: v.object({ ms: v.number() }), result: v.number() });
const limited = signature("ctl.limited", { args: v.object({}), result: v.number(), rateLimit: "5/s" });
const global = signature("ctl.global", { args: v.object({}), result: v.number(), globalRateLimit: "4/s" });

describe("control", () => {
  test("registry - live workers are listed with host, pid, queues and counters; a closed one disappears", async () => {
    const ns = freshNamespace();
    const a = worker(server, ns, { concurrency: 3 }).implement(nap, ({ ms }) => ms);
    await a.start();
    await using b = worker(server, ns, { queues: { other: { concurrency: 1 } } }).implement(nap, ({ ms }) => ms);
    await b.start();
    await using c = await client(server, ns);
    await c.call(nap, { ms: 1 }, { timeout: 5000 });
    const listed = await c.workers();
    assert.deepEqual(listed.map((w) => w.id).sort(), [a.identity.id, b.identity.id].sort());
    const entryA = listed.find((w) => w.id === a.identity.id)!;
    assert.equal(entryA.pid, process.pid);
    assert.equal(entryA.concurrency, 3);
    assert.deepEqual(Object.keys(entryA.queues), ["default"]);
    assert.deepEqual(entryA.tasks, ["ctl.nap"]);
    await a.close();
    // Its entry stays until the lease ends; a live worker's keeps being renewed. Checked via the
    // entry's heartbeat rather than waiting 15 s here.
    assert.ok(Date.now() - listed[0]!.heartbeatAt < 10_000);
  });

  test("registry - reading workers and scheduled tasks of an empty namespace creates nothing", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    assert.deepEqual(await c.workers(), []);
    assert.deepEqual(await c.scheduled(), []);
    const jsm = await c.jsm();
    const ours: string[] = [];
    for await (const s of jsm.streams.list()) if (s.config.name.includes(ns)) ours.push(s.config.name);
    assert.deepEqual(ours, [], "no stream or bucket was created by a read");
  });

  test("inspect - ping, registered, active, reserved, scheduled, stats, queues, revoked", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns, { concurrency: 1, prefetch: 2 }).implement(nap, async ({ ms }) => {
      await sleep(ms);
      return ms;
    });
    await w.start();
    await using c = await client(server, ns);
    // Naming the worker lets each inspect return as soon as it answered (not at the timeout).
    const me = { destination: { workers: [w.identity.id] } };
    assert.deepEqual(await c.inspect("ping"), { [w.identity.id]: "pong" });
    assert.deepEqual(await c.inspect("registered", me), { [w.identity.id]: ["ctl.nap"] });
    const running = await c.send(nap, { ms: 1500 });
    const waiting = await c.send(nap, { ms: 10 });
    await eventually(() => w.active === 1, 5000, "one task running");
    await sleep(100);
    const active = (await c.inspect("active", me))[w.identity.id] as { id: string }[];
    assert.deepEqual(active.map((t) => t.id), [running.id]);
    const reserved = (await c.inspect("reserved", me))[w.identity.id] as { id: string }[];
    assert.deepEqual(reserved.map((t) => t.id), [waiting.id]);
    assert.deepEqual(await c.inspect("scheduled", me), { [w.identity.id]: [] });
    const stats = (await c.inspect("stats", me))[w.identity.id] as { active: number; memory: { rss: number } };
    assert.equal(stats.active, 1);
    assert.ok(stats.memory.rss > 0);
    assert.deepEqual((await c.inspect("queues", me))[w.identity.id], { default: { concurrency: 1, prefetch: 2, serial: false, paused: false } });
    await c.revoke("some-task");
    await eventually(async () => (await c.inspect("revoked", me))[w.identity.id] === 1, 5000, "revocation seen");
    await waiting.result({ timeout: 10_000 });
  });

  test("control - destination picks workers; pool_grow/shrink, rate_limit, add/cancel consumer, pause/resume, shutdown", async () => {
    const ns = freshNamespace();
    const a = worker(server, ns, { concurrency: 2 }).implement(nap, ({ ms }) => ms);
    await a.start();
    await using b = worker(server, ns, { concurrency: 2 }).implement(nap, ({ ms }) => ms);
    await b.start();
    await using c = await client(server, ns);
    const only = { destination: { workers: [a.identity.id] } };
    const grown = await c.control("pool_grow", { n: 2 }, only);
    assert.deepEqual(grown.map((r) => [r.worker, r.ok, r.result]), [[a.identity.id, true, { concurrency: 4 }]]);
    assert.deepEqual((await c.control("pool_shrink", { n: 3 }, only))[0]!.result, { concurrency: 1 });
    const bad = await c.control("pool_grow", { n: -1 }, only);
    assert.equal(bad[0]!.ok, false);
    assert.match(bad[0]!.error!, /positive integer/);
    assert.deepEqual((await c.control("rate_limit", { task: "ctl.nap", rate: "10/m" }, only))[0]!.result, { "ctl.nap": { perWorker: "10/m" } });
    // A queue nobody consumed: a worker starts consuming it on request, and stops.
    const added = await c.control("add_consumer", { queue: "extra" });
    assert.equal(added.length, 2);
    assert.equal(await c.call(nap, { ms: 3 }, { queue: "extra", timeout: 5000 }), 3);
    await c.control("cancel_consumer", { queue: "extra" });
    assert.ok(!Object.keys((await c.inspect("queues"))[a.identity.id] as object).includes("extra"));
    // Pause the default queue everywhere: tasks wait on the server; resume: they run.
    await c.control("pause_queue", { queue: "default" });
    const h = await c.send(nap, { ms: 5 });
    await sleep(500);
    assert.equal((await h.status()).state, "PENDING");
    await c.control("resume_queue", { queue: "default" });
    assert.equal(await h.result({ timeout: 10_000 }), 5);
    // Shutdown of one worker: it closes; the other keeps serving.
    const down = await c.control("shutdown", {}, only);
    assert.equal(down[0]!.result, "shutting down");
    await eventually(async () => Object.keys(await c.inspect("ping")).length === 1, 10_000, "one worker left");
    assert.equal(await c.call(nap, { ms: 7 }, { timeout: 5000 }), 7);
  });

  test("control - pool_grow/shrink restart an adaptive prefetch from the new concurrency; add_consumer keeps a prefetch that was set", async () => {
    const ns = freshNamespace();
    await using adaptive = worker(server, ns, { concurrency: 2 }).implement(nap, ({ ms }) => ms);
    await adaptive.start();
    await using fixed = worker(server, ns, { concurrency: 2, prefetch: 1 }).implement(nap, ({ ms }) => ms);
    await fixed.start();
    await using c = await client(server, ns);
    const queues = async (w: typeof adaptive) => (await c.inspect("queues", { destination: { workers: [w.identity.id] } }))[w.identity.id] as Record<string, { concurrency: number; prefetch: number; prefetchMax?: number }>;
    assert.deepEqual((await queues(adaptive)).default, { concurrency: 2, prefetch: 2, prefetchMax: 8, serial: false, paused: false });
    await c.control("pool_grow", { n: 3 }, { destination: { workers: [adaptive.identity.id] } });
    assert.deepEqual((await queues(adaptive)).default, { concurrency: 5, prefetch: 5, prefetchMax: 20, serial: false, paused: false });
    await c.control("pool_shrink", { n: 4 }, { destination: { workers: [adaptive.identity.id] } });
    assert.deepEqual((await queues(adaptive)).default, { concurrency: 1, prefetch: 1, prefetchMax: 4, serial: false, paused: false });
    // The worker with prefetch 1 keeps it, on its own queue and on one added at run time.
    await c.control("pool_grow", { n: 2 }, { destination: { workers: [fixed.identity.id] } });
    await c.control("add_consumer", { queue: "later" }, { destination: { workers: [fixed.identity.id] } });
    const q = await queues(fixed);
    assert.deepEqual([q.default?.prefetch, q.default?.prefetchMax, q.later?.prefetch, q.later?.prefetchMax], [1, undefined, 1, undefined]);
    assert.equal(await c.call(nap, { ms: 2 }, { queue: "later", timeout: 5000 }), 2);
  });

  test("discovery - workers answer the NATS services protocol ($SRV.PING)", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(nap, ({ ms }) => ms);
    await w.start();
    await using c = await client(server, ns);
    const replies: { name: string; id: string; type: string }[] = [];
    const iter = await c.nc.requestMany("$SRV.PING.celerity-worker", "", { maxWait: 500 });
    for await (const m of iter) replies.push(JSON.parse(new TextDecoder().decode(m.data)));
    const mine = replies.find((r) => r.id === w.identity.id);
    assert.equal(mine?.type, "io.nats.micro.v1.ping_response");
    assert.equal(mine?.name, "celerity-worker");
  });

  test("rate limits - per worker (token bucket) and cluster-wide (CAS windows)", async () => {
    const ns = freshNamespace();
    const starts: number[] = [];
    await using w = worker(server, ns, { concurrency: 10 }).implement(limited, () => starts.push(Date.now()));
    await w.start();
    await using c = await client(server, ns);
    await Promise.all(Array.from({ length: 10 }, () => c.call(limited, {}, { timeout: 20_000 })));
    // A full bucket of 5 at once, then one per 200 ms: the 10th starts about 1 s after the first.
    const spread = Math.max(...starts) - Math.min(...starts);
    assert.ok(spread >= 800, `10 starts at 5/s spread over ${spread} ms`);

    const gstarts: number[] = [];
    const impl = () => gstarts.push(Date.now());
    await using g1 = worker(server, ns, { concurrency: 8, queues: ["g"] }).implement(global, impl);
    await using g2 = worker(server, ns, { concurrency: 8, queues: ["g"] }).implement(global, impl);
    await g1.start();
    await g2.start();
    await Promise.all(Array.from({ length: 12 }, () => c.call(global, {}, { queue: "g", timeout: 20_000 })));
    // 12 starts at 4 per second need at least 3 one-second windows. A start is recorded a moment
    // after its window was counted, so one start may land just past a window's edge: allow 4 + 1.
    const windows = new Map<number, number>();
    for (const t of gstarts) windows.set(Math.floor(t / 1000), (windows.get(Math.floor(t / 1000)) ?? 0) + 1);
    assert.ok(windows.size >= 3, `12 starts spread over ${windows.size} windows`);
    assert.ok([...windows.values()].every((n) => n <= 5), `starts per window: ${[...windows.values()]}`);
    assert.equal(gstarts.length, 12);
  });

  test("cli - celerity inspect and celerity control address workers and report their replies", async () => {
    const ns = freshNamespace();
    await using w = worker(server, ns).implement(nap, ({ ms }) => ms);
    await w.start();
    const run = async (args: string[]) => {
      let out = "";
      let err = "";
      const code = await main([...args, "--servers", server.url, "--namespace", ns], { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
      return { code, out, err };
    };
    const ping = await run(["inspect", "ping", "--worker", w.identity.id]);
    assert.equal(ping.code, 0, ping.err);
    assert.equal(ping.out.trim(), `${w.identity.id}: pong`);
    const grown = await run(["control", "pool_grow", "--args", '{"n": 3}', "--worker", w.identity.id, "--json"]);
    assert.equal(grown.code, 0, grown.err);
    assert.deepEqual(JSON.parse(grown.out)[0].result, { concurrency: 4 });
    const refused = await run(["control", "pool_grow", "--args", '{"n": 0}', "--worker", w.identity.id]);
    assert.equal(refused.code, 1);
    assert.match(refused.out, /error: pool_grow needs \{n: <positive integer>\}/);
    assert.equal((await run(["inspect", "gossip"])).code, 2);
    assert.equal((await run(["inspect", "ping", "--worker", "nobody", "--timeout", "200"])).code, 1);
  });
});
