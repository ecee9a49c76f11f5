/** The monitor from the SDK and from `celerity events`, against a real nats-server. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature, type Client, type TaskEvent } from "../../sdk/client/mod.ts";
import { main } from "../../sdk/cli/mod.ts";
import { EVENT, encode, PROTOCOL_VERSION } from "../../sdk/protocol/mod.ts";
import { monitor, taskTimeline, type MonitorOptions, type TaskView } from "../../sdk/monitor/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const double = signature("mon.double", { args: v.object({ n: v.number() }), result: v.number() });
const broken = signature("mon.broken", { args: v.object({ n: v.number() }) });
const flaky = signature("mon.flaky", { args: v.object({ n: v.number() }), result: v.number() });
const resize = signature("images.resize", { args: v.object({ n: v.number() }), result: v.number(), queue: "images" });
const thumb = signature("images.thumb", { args: v.object({ n: v.number() }), result: v.number(), queue: "images" });
const mail = signature("mail.send", { args: v.object({ n: v.number() }), result: v.number(), queue: "mail" });

/** A worker for the signatures above; mon.flaky asks for one retry on its first run. */
function startWorker(ns: string, queues?: string[]) {
  const tries = new Map<number, number>();
  const w = worker(server, ns, queues ? { queues } : {})
    .implement(double, ({ n }) => n * 2)
    .implement(broken, ({ n }) => {
      throw new Error(`broken ${n}`);
    })
    .implement(flaky, ({ n }, ctx) => {
      const t = (tries.get(n) ?? 0) + 1;
      tries.set(n, t);
      if (t === 1) throw ctx.retry({ delay: 0.05 });
      return n;
    })
    .implement(resize, ({ n }) => n)
    .implement(thumb, ({ n }) => n)
    .implement(mail, ({ n }) => n);
  return w;
}

/** Every event the stream holds now (non-following, from the start). */
async function readAll(c: Client, options: MonitorOptions = {}): Promise<TaskEvent[]> {
  const out: TaskEvent[] = [];
  for await (const e of monitor(c, { since: "all", follow: false, ...options })) out.push(e);
  return out;
}

/** Waits until the stream holds a final event for each of `ids`. */
async function finalEventsStored(c: Client, ids: string[]): Promise<TaskEvent[]> {
  const finals: string[] = [EVENT.succeeded, EVENT.failed, EVENT.revoked];
  return eventually(async () => {
    const all = await readAll(c);
    const done = new Set(all.filter((e) => finals.includes(e.type)).map((e) => e.id));
    // The client's task-sent batch and the worker's batches are stored independently: a task's
    // final event can be stored before its task-sent. Wait for both.
    const sent = new Set(all.filter((e) => e.type === EVENT.sent).map((e) => e.id));
    return ids.every((id) => done.has(id) && sent.has(id)) ? all : undefined;
  }, 15_000, "task-sent and final events of every task");
}

async function celerity(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

const typesOf = (events: TaskEvent[], id: string) => events.filter((e) => e.id === id).map((e) => e.type);

test("monitor - sees sent, received, started, retried, succeeded and failed of tasks a worker runs", async () => {
  const ns = freshNamespace("mon");
  await using c = await client(server, ns);
  const m = monitor(c); // since: "new"
  await m.ready;
  await using w = startWorker(ns);
  await w.start();
  const ok = await c.send(double, { n: 1 });
  const bad = await c.send(broken, { n: 2 });
  const retried = await c.send(flaky, { n: 3 }, { retries: 2 });
  const ids = [ok.id, bad.id, retried.id];
  const seen: TaskEvent[] = [];
  for await (const e of m) {
    seen.push(e);
    const views = taskTimeline(seen);
    if (ids.every((id) => ["SUCCESS", "FAILURE"].includes(views.get(id)?.state ?? ""))) break;
  }
  // The loop ended; the stream-side consumer is gone and a second loop does not start.
  assert.deepEqual(await m.next(), { done: true, value: undefined });

  const sorted = (id: string) => typesOf(seen, id).sort();
  assert.deepEqual(sorted(ok.id), [EVENT.received, EVENT.sent, EVENT.started, EVENT.succeeded].sort());
  assert.deepEqual(sorted(bad.id), [EVENT.deadLettered, EVENT.failed, EVENT.received, EVENT.sent, EVENT.started].sort());
  assert.deepEqual(sorted(retried.id), [EVENT.received, EVENT.received, EVENT.retried, EVENT.sent, EVENT.started, EVENT.started, EVENT.succeeded].sort());
  const sent = seen.find((e) => e.id === ok.id && e.type === EVENT.sent)!;
  assert.deepEqual(sent.args, { n: 1 });
  assert.equal(sent.queue, "default");
  const done = seen.find((e) => e.id === ok.id && e.type === EVENT.succeeded)!;
  assert.equal(done.result, 2);
  assert.equal(done.worker, w.identity.id);
  const failed = seen.find((e) => e.id === bad.id && e.type === EVENT.failed)!;
  assert.equal(failed.error?.message, "broken 2");

  const views = taskTimeline(seen);
  assert.equal(views.get(ok.id)!.state, "SUCCESS");
  assert.equal(views.get(ok.id)!.result, 2);
  assert.deepEqual(views.get(ok.id)!.args, { n: 1 });
  assert.equal(views.get(bad.id)!.state, "FAILURE");
  assert.equal(views.get(bad.id)!.deadLetterReason, "failed");
  assert.equal(views.get(retried.id)!.state, "SUCCESS");
  assert.equal(views.get(retried.id)!.retries, 1);
  assert.equal(views.get(retried.id)!.attempts, 2);
  assert.equal(m.stats.events, seen.length);
});

test("monitor - the timeline converges whatever the arrival order", () => {
  const at = 1_700_000_000_000;
  const base = { id: "t1", task: "x.y", queue: "q" };
  const events: TaskEvent[] = [
    { ...base, type: EVENT.sent, at: at + 5, args: { a: 1 } }, // the client's clock is 5 ms ahead
    { ...base, type: EVENT.received, at, worker: "w1", retries: 0 },
    { ...base, type: EVENT.started, at: at + 1, worker: "w1" },
    { ...base, type: EVENT.progress, at: at + 2, worker: "w1", progress: 0.5 },
    { ...base, type: EVENT.retried, at: at + 3, worker: "w1", retries: 1, error: { type: "E", message: "once", retryable: true } },
    { ...base, type: EVENT.received, at: at + 10, worker: "w2", retries: 1 },
    { ...base, type: EVENT.started, at: at + 11, worker: "w2", retries: 1 },
    { ...base, type: EVENT.progress, at: at + 12, worker: "w2", progress: 0.9, retries: 1 },
    { ...base, type: EVENT.succeeded, at: at + 13, worker: "w2", result: "done", runtimeMs: 2 },
  ];
  const expected = taskTimeline(events).get("t1")!;
  assert.equal(expected.state, "SUCCESS");
  assert.equal(expected.result, "done");
  assert.deepEqual(expected.args, { a: 1 });
  assert.equal(expected.retries, 1);
  assert.equal(expected.attempts, 2);
  assert.equal(expected.worker, "w2");
  assert.equal(expected.progress, 0.9);
  assert.equal(expected.sentAt, at + 5);
  assert.equal(expected.receivedAt, at + 10);
  assert.equal(expected.events, events.length);
  // 200 shuffles, and every prefix of a shuffle, fold like the same events in order.
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let round = 0; round < 200; round++) {
    const shuffled = [...events].sort(() => random() - 0.5);
    assert.deepEqual(taskTimeline(shuffled).get("t1"), expected, `order ${shuffled.map((e) => e.type).join(",")}`);
  }
  // Partial knowledge: without the end event the state is the second run's, not the retry.
  const running = taskTimeline(events.slice(0, 7).reverse()).get("t1")!;
  assert.equal(running.state, "STARTED");
  assert.equal(running.worker, "w2");
  const retrying = taskTimeline(events.slice(0, 5).reverse()).get("t1")!;
  assert.equal(retrying.state, "RETRY");
  assert.equal(retrying.error?.message, "once");
  // The worker sends task-dead-lettered then task-failed in the same millisecond: FAILURE either way.
  const dl: TaskEvent[] = [
    { ...base, type: EVENT.failed, at, error: { type: "E", message: "x", retryable: false } },
    { ...base, type: EVENT.deadLettered, at, reason: "failed" },
  ];
  const a = taskTimeline(dl).get("t1")!;
  const b = taskTimeline([...dl].reverse()).get("t1")!;
  assert.deepEqual(a, b);
  assert.equal(a.state, "FAILURE");
  assert.equal(a.deadLetterReason, "failed");
});

test("monitor - filters by type, task glob, queue and id; since a time; follow: false ends", async () => {
  const ns = freshNamespace("mon");
  await using c = await client(server, ns);
  await using w = startWorker(ns, ["default", "images", "mail"]);
  await w.start();
  const before = new Date();
  const handles = [
    await c.send(resize, { n: 1 }),
    await c.send(thumb, { n: 2 }),
    await c.send(mail, { n: 3 }),
    await c.send(broken, { n: 4 }),
  ];
  const all = await finalEventsStored(c, handles.map((h) => h.id));
  const [r, t, ml, b] = handles.map((h) => h.id) as [string, string, string, string];

  const images = await readAll(c, { task: "images.*" });
  assert.deepEqual(new Set(images.map((e) => e.id)), new Set([r, t]));
  assert.equal(images.length, all.filter((e) => e.task.startsWith("images.")).length);
  assert.deepEqual(new Set((await readAll(c, { task: "images.re?ize" })).map((e) => e.id)), new Set([r]));
  assert.deepEqual(new Set((await readAll(c, { queue: "mail" })).map((e) => e.id)), new Set([ml]));
  const failures = await readAll(c, { types: [EVENT.failed, EVENT.deadLettered] });
  assert.deepEqual(failures.map((e) => e.type).sort(), [EVENT.deadLettered, EVENT.failed]);
  assert.ok(failures.every((e) => e.id === b));
  const one = await readAll(c, { id: t });
  assert.deepEqual(one.map((e) => e.type).sort(), [EVENT.received, EVENT.sent, EVENT.started, EVENT.succeeded].sort());
  assert.deepEqual(await readAll(c, { id: t, types: [EVENT.succeeded] }).then((es) => es.map((e) => e.result)), [2]);
  // since: a time after everything → nothing; before → everything.
  assert.equal((await readAll(c, { since: new Date(Date.now() + 60_000) })).length, 0);
  assert.equal((await readAll(c, { since: new Date(before.getTime() - 1000) })).length, all.length);
  // "new" without following has nothing to read and ends at once.
  assert.equal((await readAll(c, { since: "new" })).length, 0);
  // Undecodable batches and non-events on the subject are skipped, not fatal.
  c.nc.publish(c.names.eventsSubject("task"), new Uint8Array([0xc1]));
  await c.publisher.publish(c.names.eventsSubject("task"), encode({ v: PROTOCOL_VERSION, events: [{ nope: 1 }] }));
  await c.publisher.publish(c.names.eventsSubject("task"), new Uint8Array([0xc1]));
  const m = monitor(c, { since: "all", follow: false });
  const again: TaskEvent[] = [];
  for await (const e of m) again.push(e);
  assert.equal(again.length, all.length);
  assert.ok(m.stats.skipped >= 1);
});

test("monitor - an aborted signal or close() ends a following loop", async () => {
  const ns = freshNamespace("mon");
  await using c = await client(server, ns);
  const ac = new AbortController();
  const m = monitor(c, { signal: ac.signal });
  await m.ready;
  const waiting = m.next();
  setTimeout(() => ac.abort(), 100);
  assert.deepEqual(await waiting, { done: true, value: undefined });
  const m2 = monitor(c);
  await m2.ready;
  const waiting2 = m2.next();
  setTimeout(() => void m2.close(), 100);
  assert.deepEqual(await waiting2, { done: true, value: undefined });
  // close() before iterating releases the consumer too.
  const m3 = monitor(c);
  await m3.close();
  assert.deepEqual(await m3.next(), { done: true, value: undefined });
});

test("monitor - a durable monitor that was offline catches up on exactly the events it missed", async () => {
  const ns = freshNamespace("mon");
  await using c = await client(server, ns);
  await using w = startWorker(ns);
  await w.start();
  const first = [await c.send(double, { n: 1 }), await c.send(double, { n: 2 })].map((h) => h.id);
  const stored1 = await finalEventsStored(c, first);

  // Run 1: read everything so far, then stop (break after the last stored event).
  const run1: TaskEvent[] = [];
  for await (const e of monitor(c, { durable: "audit", since: "all" })) {
    run1.push(e);
    if (run1.length === stored1.length) break;
  }
  assert.deepEqual(run1, stored1);

  // Offline: more tasks run (one of them fails after a retry, to make the events varied).
  const second = [await c.send(double, { n: 3 }), await c.send(flaky, { n: 4 }, { retries: 1 }), await c.send(broken, { n: 5 })].map((h) => h.id);
  const stored2 = await finalEventsStored(c, [...first, ...second]);
  const missed = stored2.slice(stored1.length);
  assert.ok(missed.length >= 13, `events of the second round: ${missed.length}`);

  // Run 2: exactly the missed events, in stream order, none of the first round.
  const run2: TaskEvent[] = [];
  const m2 = monitor(c, { durable: "audit", follow: false });
  for await (const e of m2) run2.push(e);
  assert.deepEqual(run2, missed);
  assert.ok(run2.every((e) => second.includes(e.id)));

  // Run 3: nothing new.
  const run3: TaskEvent[] = [];
  for await (const e of monitor(c, { durable: "audit", follow: false })) run3.push(e);
  assert.deepEqual(run3, []);

  // Stopping in the middle of a batch gives that batch again (at least once); stopping after its
  // last event acknowledges it.
  const synthetic: TaskEvent[] = [1, 2, 3].map((i) => ({ type: EVENT.sent, id: `syn-${i}`, task: "mon.synthetic", at: Date.now(), queue: "default", args: { i } }));
  await c.publisher.publish(c.names.eventsSubject("task"), encode({ v: PROTOCOL_VERSION, events: synthetic }));
  for await (const _ of monitor(c, { durable: "audit" })) break; // after the first of three
  const run4: TaskEvent[] = [];
  for await (const e of monitor(c, { durable: "audit" })) {
    run4.push(e);
    if (run4.length === 3) break; // after the last of three
  }
  assert.deepEqual(run4, synthetic);
  const run5: TaskEvent[] = [];
  for await (const e of monitor(c, { durable: "audit", follow: false })) run5.push(e);
  assert.deepEqual(run5, []);
});

test("celerity events - prints, filters, --json, --follow until SIGINT", async () => {
  const ns = freshNamespace("mon");
  const conn = ["--servers", server.url, "--namespace", ns];
  await using c = await client(server, ns);
  await using w = startWorker(ns, ["default", "images", "mail"]);
  await w.start();
  const ok = await c.send(resize, { n: 7 });
  const bad = await c.send(broken, { n: 8 });
  const all = await finalEventsStored(c, [ok.id, bad.id]);

  const plain = await celerity(["events", ...conn]);
  assert.equal(plain.code, 0, plain.err);
  const lines = plain.out.trim().split("\n");
  assert.equal(lines.length, all.length);
  const succeeded = lines.find((l) => l.includes("task-succeeded"))!;
  assert.match(succeeded, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z  task-succeeded      images\\.resize  ${ok.id}  images  ${w.identity.id}  \\d+ ms → 7$`));
  assert.match(lines.find((l) => l.includes("task-sent") && l.includes(ok.id))!, /args \{"n":7\}$/);
  assert.match(lines.find((l) => l.includes("task-failed"))!, /Error: broken 8$/);

  const failed = await celerity(["events", "--type", "failed,task-dead-lettered", ...conn]);
  assert.equal(failed.out.trim().split("\n").length, 2);
  assert.ok(failed.out.includes(bad.id) && !failed.out.includes(ok.id));
  const byTask = await celerity(["events", "--task", "images.*", "--type", "succeeded", "--json", ...conn]);
  const parsed = byTask.out.trim().split("\n").map((l) => JSON.parse(l) as TaskEvent);
  assert.deepEqual(parsed.map((e) => [e.type, e.id, e.result]), [[EVENT.succeeded, ok.id, 7]]);
  assert.equal((await celerity(["events", "--queue", "mail", ...conn])).out, "");
  assert.equal((await celerity(["events", "--since", "1m", "--id", bad.id, ...conn])).out.trim().split("\n").length, 5);

  assert.equal((await celerity(["events", "--since", "yesterday", ...conn])).code, 2);
  assert.equal((await celerity(["events", "--type", "exploded", ...conn])).code, 2);
  assert.match((await celerity(["events", "--type", "exploded", ...conn])).err, /unknown event type "exploded"/);
  assert.equal((await celerity(["events", "extra", ...conn])).code, 2);

  // --follow in a real process: new events only, until SIGINT (then exit 0).
  const since = new Date().toISOString();
  const child = spawn(process.execPath, ["--import", "tsx", "sdk/cli/run.ts", "events", "--follow", "--since", since, "--type", "succeeded", ...conn], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const later = await c.send(double, { n: 21 });
  await eventually(() => out.includes(later.id), 20_000, `the followed event (stderr: ${err})`);
  child.kill("SIGINT");
  assert.equal(await exited, 0, err);
  assert.equal(out.trim().split("\n").length, 1, out);
  assert.match(out, /task-succeeded {6}mon\.double .* 42$/m);
});

// Keep the view type referenced (documentation of what taskTimeline returns).
export type _View = TaskView;
