/** Canvas against a real nats-server: chains, groups, chords counted in JetStream, map/starmap/chunks. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import type { MsgHdrs } from "@nats-io/nats-core";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { RemoteTaskError, signature, STATE, type Client } from "../../sdk/client/mod.ts";
import { decode, HEADER } from "../../sdk/protocol/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";
import {
  apply,
  call,
  callImmutable,
  chain,
  chord,
  chordBucket,
  chunks,
  group,
  map,
  starmap,
  withLink,
  withLinkError,
  type ApplyClient,
  type ChordState,
} from "../../sdk/canvas/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const add = signature("canvas.add", { args: v.object({ a: v.number(), b: v.number() }), result: v.number() });
const double = signature("canvas.double", { args: v.number(), result: v.number() });
const sum = signature("canvas.sum", { args: v.array(v.unknown()), result: v.number() });
const fail = signature("canvas.fail", { args: v.unknown() });
const slowEcho = signature("canvas.slow_echo", { args: v.object({ ms: v.number(), value: v.number() }), result: v.number() });
const pair = signature("canvas.pair", { args: v.tuple([v.number(), v.number()]), result: v.number() });
const batch = signature("canvas.batch", { args: v.array(v.number()), result: v.number() });
const seen = signature("canvas.seen", { args: v.unknown() });
/** Lives on its own queue, served by a worker that implements nothing else. */
const report = signature("canvas.report", { args: v.array(v.unknown()), result: v.string(), queue: "reports" });
const alert = signature("canvas.alert", { args: v.unknown(), queue: "reports" });
/** A result of `n` KB. */
const blob = signature("canvas.blob", { args: v.number(), result: v.string() });
/** Lives on a queue no worker serves until a test starts one. */
const later = signature("canvas.later", { args: v.number(), result: v.number(), queue: "later" });

interface Counters {
  sums: unknown[][];
  seen: unknown[];
  runs: Map<string, number>;
}

/** A worker implementing every default-queue task of this file, counting what ran. */
function mathWorker(ns: string, counters: Counters, extra: Parameters<typeof worker>[2] = {}): Worker {
  const count = (id: string) => counters.runs.set(id, (counters.runs.get(id) ?? 0) + 1);
  return worker(server, ns, { concurrency: 8, ...extra })
    .implement(add, ({ a, b }, ctx) => {
      count(ctx.id);
      return a + b;
    })
    .implement(double, (n, ctx) => {
      count(ctx.id);
      return n * 2;
    })
    .implement(sum, (items, ctx) => {
      count(ctx.id);
      counters.sums.push(items);
      return items.reduce((t: number, x) => t + (typeof x === "number" ? x : 0), 0);
    })
    .implement(fail, (args) => {
      throw new TypeError(`refused ${JSON.stringify(args)}`);
    })
    .implement(slowEcho, async ({ ms, value }, ctx) => {
      count(ctx.id);
      await new Promise((r) => setTimeout(r, ms));
      return value;
    })
    .implement(pair, ([x, y]) => x + y)
    .implement(batch, (items) => items.reduce((t, x) => t + x, 0))
    .implement(blob, (kb, ctx) => {
      count(ctx.id);
      return "b".repeat(kb * 1024);
    })
    .implement(seen, (args) => {
      counters.seen.push(args);
    });
}

function counters(): Counters {
  return { sums: [], seen: [], runs: new Map() };
}

/** A started {@link mathWorker} and a worker on queue "reports" collecting `alert` calls (error callbacks); disposing closes both. */
async function mathAndAlertWorkers(ns: string) {
  const k = counters();
  const w = mathWorker(ns, k);
  await w.start();
  const alerts: unknown[] = [];
  const reports = worker(server, ns, { queues: ["reports"] }).implement(alert, (args) => {
    alerts.push(args);
  });
  try {
    await reports.start();
  } catch (err) {
    await w.close();
    throw err;
  }
  return {
    k,
    alerts,
    async [Symbol.asyncDispose]() {
      await reports[Symbol.asyncDispose]();
      await w[Symbol.asyncDispose]();
    },
  };
}

/** A fresh namespace with a started {@link mathWorker} and a client in it; disposing closes both. */
async function mathNamespace(extra: Parameters<typeof worker>[2] = {}) {
  const ns = freshNamespace();
  const k = counters();
  const w = mathWorker(ns, k, extra);
  await w.start();
  let c: Client;
  try {
    c = await client(server, ns);
  } catch (err) {
    await w.close();
    throw err;
  }
  return {
    ns,
    k,
    w,
    c,
    async [Symbol.asyncDispose]() {
      await c[Symbol.asyncDispose]();
      await w[Symbol.asyncDispose]();
    },
  };
}

async function chordState(c: Client, chordId: string): Promise<ChordState | undefined> {
  const jsm = await c.jsm();
  const m = await jsm.streams.getMessage(`KV_${chordBucket(c.names)}`, { last_by_subj: `$KV.${chordBucket(c.names)}.state.${chordId}` });
  return m ? (decode(m.data) as ChordState) : undefined;
}

const settle = (ms = 400) => new Promise((r) => setTimeout(r, ms));

describe("canvas", () => {
  test("canvas - a chain of three passes each result to the next; an immutable step keeps its own args", async () => {
    await using math = await mathNamespace();
    const { c } = math;
    const h = await apply(c, chain(call(add, { a: 1, b: 2 }), call(double), call(double)), { id: "order-1" });
    assert.equal(h.id, "order-1.2", "the last task's id is derived and known up front");
    assert.equal(h.first.id, "order-1.0");
    const twelve: number = await h.result({ timeout: 10_000 });
    assert.equal(twelve, 12);
    assert.equal(await h.first.result(), 3);
    const step = await c.status("order-1.1");
    assert.equal(step.state, STATE.success);

    const im = await apply(c, chain(call(add, { a: 1, b: 2 }), callImmutable(add, { a: 10, b: 10 }), call(double)));
    assert.equal(await im.result({ timeout: 10_000 }), 40, "the immutable step ignored 3 and its result fed the next");
  });

  test("canvas - a failing chain step stops the chain and sends the chain's error callback on its worker", async () => {
    const ns = freshNamespace();
    await using workers = await mathAndAlertWorkers(ns);
    const { k, alerts } = workers;
    await using c = await client(server, ns);
    const h = await apply(c, withLinkError(chain(call(add, { a: 1, b: 1 }), call(fail), call(double)), call(alert)), { id: "broken" });
    await assert.rejects(c.task("broken.1").result({ timeout: 10_000 }), (err: RemoteTaskError) => err.remoteType === "TypeError");
    await eventually(() => alerts.length === 1, 10_000, "the error callback");
    const received = alerts[0] as { taskId: string; task: string; error: { type: string } };
    assert.equal(received.taskId, "broken.1");
    assert.equal(received.error.type, "TypeError");
    // The step after the failure never runs; its record is the failed step's error, so the chain's
    // handle rejects with it instead of waiting.
    await assert.rejects(h.result({ timeout: 10_000 }), (err: RemoteTaskError) => err.remoteType === "TypeError");
    assert.equal((await c.status(h.id)).state, STATE.failure);
    await settle();
    assert.equal(k.runs.get("broken.2"), undefined, "the step after the failure never ran");
    assert.equal(alerts.length, 1);
  });

  test("canvas - a group's results come back in order, with each member's result or error", async () => {
    await using math = await mathNamespace();
    const { c } = math;
    const g = await apply(c, group([call(slowEcho, { ms: 300, value: 1 }), call(slowEcho, { ms: 10, value: 2 }), call(add, { a: 1, b: 2 })]), { id: "g1" });
    assert.deepEqual(g.ids, ["g1.0", "g1.1", "g1.2"]);
    const values: [number, number, number] = await g.result({ timeout: 10_000 });
    assert.deepEqual(values, [1, 2, 3]);
    assert.equal(await g.ready(), true);
    assert.equal(await g.completed(), 3);

    const mixed = await apply(c, group([call(add, { a: 2, b: 2 }), call(fail, { why: "no" }), call(double, 5)]));
    const settled = await mixed.results({ timeout: 10_000 });
    assert.deepEqual(settled.map((s) => s.ok), [true, false, true]);
    assert.equal(settled[0]!.ok && settled[0]!.value, 4);
    assert.equal(!settled[1]!.ok && (settled[1]!.error as RemoteTaskError).remoteType, "TypeError");
    assert.equal(await mixed.completed(), 2);
    await assert.rejects(mixed.result(), RemoteTaskError);
  });

  test("canvas - a group too large for one event message still reports every member's task-sent", async () => {
    await using math = await mathNamespace();
    const { c } = math;
    // 300 members with 4 KB of args each: 1.2 MB of task-sent events, above the 1 MiB max_payload.
    const pad = "p".repeat(4000);
    const g = await apply(c, group(Array.from({ length: 300 }, (_, i) => call(seen, { i, pad }))), { id: "big" });
    await g.results({ timeout: 60_000 });
    const jsm = await c.jsm();
    const sent = new Set<string>();
    await eventually(async () => {
      const { state } = await jsm.streams.info(c.names.eventsStream);
      for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
        const m = await jsm.streams.getMessage(c.names.eventsStream, { seq });
        for (const e of (decode(m!.data) as { events: { type: string; id: string }[] }).events) {
          if (e.type === "task-sent" && e.id.startsWith("big.")) sent.add(e.id);
        }
      }
      return sent.size === 300;
    }, 10_000, "300 task-sent events");
    assert.equal(c.eventsDropped, 0);
  });

  test("canvas - a chord sends its callback the members' results, counted in JetStream", async () => {
    await using math = await mathNamespace();
    const { k, c } = math;
    const h = await apply(c, chord([call(add, { a: 1, b: 1 }), call(slowEcho, { ms: 200, value: 10 }), call(double, 50)], call(sum)), { id: "ch1" });
    assert.equal(h.id, "ch1.cb");
    assert.equal(h.chordId, "ch1");
    assert.deepEqual(h.header.ids, ["ch1.0", "ch1.1", "ch1.2"]);
    assert.equal(await h.result({ timeout: 10_000 }), 112);
    assert.deepEqual(k.sums, [[2, 10, 100]]);
    const state = await eventually(async () => {
      const s = await chordState(c, "ch1");
      return s?.sent ? s : undefined;
    }, 5000, "the chord marked sent");
    assert.equal(state.n, 3);
  });

  test("canvas - a chord whose member fails: policy fail stores a ChordError and sends the error callback once; partial runs the callback", async () => {
    const ns = freshNamespace();
    await using workers = await mathAndAlertWorkers(ns);
    const { k, alerts } = workers;
    await using c = await client(server, ns);
    const failing = () => [call(add, { a: 1, b: 2 }), call(fail, { n: 1 }), call(fail, { n: 2 }), call(add, { a: 3, b: 4 })] as const;

    const strict = await apply(c, withLinkError(chord(failing(), call(sum)), call(alert)), { id: "strict" });
    await assert.rejects(strict.result({ timeout: 10_000 }), (err: RemoteTaskError) => {
      assert.equal(err.remoteType, "ChordError");
      const details = err.details as { chordId: string; errors: { index: number; id: string; error: { type: string } }[] };
      assert.equal(details.chordId, "strict");
      assert.deepEqual(details.errors.map((e) => [e.index, e.id, e.error.type]), [[1, "strict.1", "TypeError"], [2, "strict.2", "TypeError"]]);
      return true;
    });
    await eventually(() => alerts.length === 1, 10_000, "the chord's error callback");
    const alerted = alerts[0] as { chordId: string; taskId: string; error: { type: string; details: { errors: unknown[] } } };
    assert.equal(alerted.chordId, "strict");
    assert.equal(alerted.taskId, "strict.cb");
    assert.equal(alerted.error.type, "ChordError");
    assert.equal(alerted.error.details.errors.length, 2, "every member's error");
    assert.equal(k.sums.length, 0, "the callback did not run");

    const partial = await apply(c, chord(failing(), call(sum), { onError: "partial" }));
    assert.equal(await partial.result({ timeout: 10_000 }), 10);
    assert.equal(k.sums.length, 1);
    const got = k.sums[0]!;
    assert.equal(got[0], 3);
    assert.equal((got[1] as { error: { type: string } }).error.type, "TypeError");
    assert.equal((got[2] as { error: { message: string } }).error.message, 'refused {"n":2}');
    assert.equal(got[3], 7);
    await settle();
    assert.equal(alerts.length, 1, "no error callback under policy partial");
  });

  test("canvas - a chord member that is a chain stopped early (failed or revoked step) reports that step's error", async () => {
    await using math = await mathNamespace();
    const { k, c } = math;
    const header = () => [chain(call(fail, "boom"), call(double)), call(add, { a: 1, b: 1 })] as const;
    const strict = await apply(c, chord(header(), call(sum)), { id: "stop1" });
    await assert.rejects(strict.result({ timeout: 10_000 }), (err: RemoteTaskError) => {
      assert.equal(err.remoteType, "ChordError");
      const errors = (err.details as { errors: { id: string; error: { type: string; message: string } }[] }).errors;
      assert.deepEqual(errors.map((e) => [e.id, e.error.type, e.error.message]), [["stop1.0.1", "TypeError", 'refused "boom"']]);
      return true;
    });
    const partial = await apply(c, chord(header(), call(sum), { onError: "partial" }), { id: "stop2" });
    assert.equal(await partial.result({ timeout: 10_000 }), 2);
    assert.equal((k.sums[0]![0] as { error: { type: string } }).error.type, "TypeError");
    // A group of chains: the stopped chain's handle rejects instead of waiting for ever.
    const g = await apply(c, group([chain(call(fail, "x"), call(double)), call(double, 2)]));
    assert.deepEqual((await g.results({ timeout: 10_000 })).map((r) => r.ok), [false, true]);

    // A revoked first step of a chain member: its error is the revocation.
    const h = await apply(c, chord([call(later, 1), chain(call(later, 2), call(double)), call(double, 3)], call(sum), { onError: "partial" }), { id: "stop3" });
    await c.revoke("stop3.0", { reason: "member 0 revoked" });
    await c.revoke("stop3.1.0", { reason: "the chain's first step revoked" });
    await settle(300);
    await using laterWorker = worker(server, math.ns, { queues: ["later"] }).implement(later, (x) => x);
    await laterWorker.start();
    assert.equal(await h.result({ timeout: 10_000 }), 6);
    const got = k.sums[1]!.map((x) => (x as { error?: { type: string; message: string } }).error ?? x);
    assert.deepEqual(got, [
      { type: "TaskRevokedError", message: "member 0 revoked", retryable: false },
      { type: "TaskRevokedError", message: "the chain's first step revoked", retryable: false },
      6,
    ]);
    assert.equal((await c.status("stop3.1.1")).state, STATE.revoked);
  });

  test("canvas - a chord whose definition expired before its last member finished fails its body once, without running members again", async () => {
    const ns = freshNamespace();
    const k = counters();
    // Results (and chord state) kept 2 s; the member takes 4 s.
    await using w = mathWorker(ns, k, { resultExpires: 2 } as never);
    await w.start();
    await using c = await client(server, ns, { resultExpires: 2 } as never);
    const h = await apply(c, chord([call(slowEcho, { ms: 4000, value: 1 })], call(sum)), { id: "late" });
    await assert.rejects(h.result({ timeout: 10_000 }), (err: RemoteTaskError) => {
      assert.equal(err.remoteType, "ChordExpiredError");
      assert.match(err.message, /chord late: its definition expired/);
      return true;
    });
    await settle(800);
    assert.equal(k.runs.get("late.0"), 1, "the member ran once: it was acked");
    assert.equal(k.sums.length, 0);
    assert.equal((await chordState(c, "late"))?.sent, true, "settled: nothing retries it");
  });

  test("canvas - a chord body too large to send fails with PayloadTooLargeError; members run once", async () => {
    const ns = freshNamespace();
    await using workers = await mathAndAlertWorkers(ns);
    const { k, alerts } = workers;
    await using c = await client(server, ns);
    // Each result fits (400 KB); the three together (1.2 MB) are above the 1 MiB max_payload.
    const h = await apply(c, withLinkError(chord([call(blob, 400), call(blob, 400), call(blob, 400)], call(sum)), call(alert)), { id: "huge" });
    await assert.rejects(h.result({ timeout: 10_000 }), (err: RemoteTaskError) => {
      assert.equal(err.remoteType, "PayloadTooLargeError");
      assert.match(err.message, /chord huge: its body cannot be sent: task "canvas\.sum" \(huge\.cb\) is \d+ bytes/);
      return true;
    });
    await eventually(() => alerts.length === 1, 10_000, "the chord's error callback");
    await settle(800);
    assert.deepEqual([0, 1, 2].map((i) => k.runs.get(`huge.${i}`)), [1, 1, 1], "each member ran once");
    for (const i of [0, 1, 2]) assert.equal((await c.status(`huge.${i}`)).state, STATE.success, "the members' records are kept");
    assert.equal(k.sums.length, 0);
    assert.equal(alerts.length, 1);
    assert.equal((await chordState(c, "huge"))?.sent, true);
  });

  test("canvas - a link whose args (the parent's result with its own) are too large fails; the parent runs once", async () => {
    const ns = freshNamespace();
    await using workers = await mathAndAlertWorkers(ns);
    const { k } = workers;
    await using c = await client(server, ns);
    // 600 KB of result merged into 600 KB of the link's own args: 1.2 MB, above max_payload.
    await apply(c, withLink(call(blob, 600), call(seen, { pad: "p".repeat(600 * 1024) })), { id: "biglink" });
    await eventually(async () => (await c.status("biglink.l0")).state === STATE.failure, 10_000, "the link's FAILURE record");
    const link = await c.status("biglink.l0");
    assert.equal(link.record?.error?.type, "PayloadTooLargeError");
    assert.match(link.record?.error?.message ?? "", /not sent after biglink: .* is \d+ bytes/);
    await settle(800);
    assert.equal(k.runs.get("biglink"), 1, "the parent ran once: its message was acked");
    assert.equal((await c.status("biglink")).state, STATE.success);
    assert.equal(k.seen.length, 0);
  });

  test("canvas - apply sends nothing when one message of the canvas is too large", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    await c.ensureTopology();
    const huge = "x".repeat(1_100_000);
    await assert.rejects(apply(c, chord([call(double, 1), call(double, 2), call(sum, [huge])], call(sum)), { id: "parts" }), (err: Error) => {
      assert.equal(err.name, "PayloadTooLargeError");
      assert.match(err.message, /task "canvas\.sum" \(parts\.2\) is \d+ bytes/);
      return true;
    });
    await assert.rejects(apply(c, group([call(double, 1), call(sum, [huge])])), /PayloadTooLarge|max_payload/);
    const jsm = await c.jsm();
    assert.equal((await jsm.streams.info(c.names.tasksStream)).state.messages, 0, "no member was sent");
    const spec = await jsm.streams.getMessage(`KV_${chordBucket(c.names)}`, { last_by_subj: `$KV.${chordBucket(c.names)}.spec.parts` }).catch(() => null);
    assert.equal(spec, null, "no chord definition was stored");
  });

  test("canvas - a chord failed by policy fail sends its body's own error callbacks too, and the chord's once", async () => {
    const ns = freshNamespace();
    await using workers = await mathAndAlertWorkers(ns);
    const { k, alerts } = workers;
    await using c = await client(server, ns);
    const h = await apply(c, withLinkError(chord([call(fail, "x"), call(add, { a: 1, b: 2 })], withLinkError(call(sum), call(seen))), call(alert)), { id: "errbacks" });
    await assert.rejects(h.result({ timeout: 10_000 }), (err: RemoteTaskError) => err.remoteType === "ChordError");
    await eventually(() => k.seen.length === 1 && alerts.length === 1, 10_000, "the body's and the chord's error callbacks");
    const received = k.seen[0] as { taskId: string; chordId: string; error: { type: string } };
    assert.equal(received.taskId, "errbacks.cb");
    assert.equal(received.chordId, "errbacks");
    assert.equal(received.error.type, "ChordError");
    await settle();
    assert.equal(k.seen.length, 1);
    assert.equal(alerts.length, 1, "the chord's error callback (also copied onto its body) was sent once");
  });

  test("canvas - a member cold-closed mid-run is redelivered to another worker and the callback is sent once", async () => {
    const ns = freshNamespace();
    const k = counters();
    // Prefetch 1: the closing worker holds no spare pull capacity the returned message could come back to.
    const first = mathWorker(ns, k, { concurrency: 1, prefetch: 1 });
    await first.start();
    await using c = await client(server, ns);
    const h = await apply(c, chord([call(slowEcho, { ms: 1500, value: 5 }), call(add, { a: 1, b: 1 }), call(add, { a: 2, b: 2 })], call(sum)), { id: "cold" });
    await eventually(() => first.active === 1 && (k.runs.get("cold.0") ?? 0) === 1, 10_000, "the slow member to be running");
    await first.close({ graceMs: 0 });
    await using second = mathWorker(ns, k);
    await second.start();
    assert.equal(await h.result({ timeout: 15_000 }), 11);
    assert.equal(k.runs.get("cold.0"), 2, "the member ran twice");
    await settle(800);
    assert.equal(k.runs.get("cold.cb"), 1, "the callback ran once");
  });

  test("canvas - members that run and report twice (racing duplicates) are counted once and the callback is sent once", async () => {
    await using math = await mathNamespace({ concurrency: 16 });
    const { k, c } = math;
    // Every member message is stored twice under different dedupe ids, as if each member's worker
    // had crashed after counting it and before acking: both copies run and both count themselves.
    const duplicating: ApplyClient = {
      names: c.names,
      settings: c.settings,
      jsm: () => c.jsm(),
      task: (id, sig) => c.task(id, sig!),
      pushEvent: (e) => c.pushEvent(e),
      publisher: {
        publish: async (subject: string, data: Uint8Array, h?: MsgHdrs) => {
          const ack = await c.publisher.publish(subject, data, h);
          const id = h?.get(HEADER.msgId);
          if (id && /^dup\.\d+$/.test(id)) {
            const copy = h!;
            copy.set(HEADER.msgId, `${id}.again`);
            await c.publisher.publish(subject, data, copy);
          }
          return ack;
        },
      },
    };
    const n = 12;
    const members = Array.from({ length: n }, (_, i) => call(slowEcho, { ms: 5 + (i % 4) * 20, value: i }));
    const h = await apply(duplicating, chord(members, call(sum)), { id: "dup" });
    assert.equal(await h.result({ timeout: 15_000 }), (n * (n - 1)) / 2);
    await eventually(() => [...Array(n).keys()].every((i) => k.runs.get(`dup.${i}`) === 2), 10_000, "every member to run twice");
    await settle(800);
    assert.equal(k.runs.get("dup.cb"), 1, "the callback ran once");
    assert.equal(k.sums.length, 1);
    assert.equal((await chordState(c, "dup"))?.sent, true);
  });

  test("canvas - a chord of one member and a chord of an empty group", async () => {
    await using math = await mathNamespace();
    const { k, c } = math;
    const one = await apply(c, chord([call(add, { a: 20, b: 22 })], call(sum)));
    assert.equal(await one.result({ timeout: 10_000 }), 42);
    const none = await apply(c, chord(group([]), call(sum)), { id: "empty" });
    assert.equal(await none.result({ timeout: 10_000 }), 0);
    assert.equal(await chordState(c, "empty"), undefined, "no state: the callback was sent at once");
    assert.deepEqual(k.sums, [[42], []]);
    const emptyGroup = await apply(c, group([]));
    assert.deepEqual(await emptyGroup.result(), []);
  });

  test("canvas - nesting: a group inside a chain becomes a chord; a chord inside a chain; a group of chains; a chord of chains", async () => {
    await using math = await mathNamespace();
    const { c } = math;
    // 3 → [6, 6] → 12 → 24
    const upgraded = await apply(c, chain(call(add, { a: 1, b: 2 }), group([call(double), call(double)]), call(sum), call(double)), { id: "up" });
    assert.equal(await upgraded.result({ timeout: 10_000 }), 24);
    assert.equal(upgraded.id, "up.1.cb.1");
    // 2 → chord([4, 4] → 8) → 16
    const inner = await apply(c, chain(call(add, { a: 1, b: 1 }), chord([call(double), call(double)], call(sum)), call(double)));
    assert.equal(await inner.result({ timeout: 10_000 }), 16);
    // [(1+1)*2, (2+2)*2]
    const chains = await apply(c, group([chain(call(add, { a: 1, b: 1 }), call(double)), chain(call(add, { a: 2, b: 2 }), call(double))]));
    assert.deepEqual(await chains.result({ timeout: 10_000 }), [4, 8]);
    // chord of a chain and a chord: [(3*2), sum([1, 2])] → 9
    const deep = await apply(c, chord([chain(call(add, { a: 1, b: 2 }), call(double)), chord([call(double, 0.5), call(add, { a: 1, b: 1 })], call(sum))], call(sum)));
    assert.equal(await deep.result({ timeout: 10_000 }), 9);
  });

  test("canvas - map, starmap and chunks", async () => {
    await using math = await mathNamespace();
    const { c } = math;
    assert.deepEqual(await (await apply(c, map(double, [1, 2, 3]))).result({ timeout: 10_000 }), [2, 4, 6]);
    assert.deepEqual(await (await apply(c, starmap(pair, [[1, 2], [3, 4]]))).result({ timeout: 10_000 }), [3, 7]);
    const parts = await apply(c, chunks(batch, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 3));
    assert.equal(parts.members.length, 4);
    assert.deepEqual(await parts.result({ timeout: 10_000 }), [6, 15, 24, 10]);
    const total = await apply(c, chord(chunks(batch, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 4), call(sum)));
    assert.equal(await total.result({ timeout: 10_000 }), 55);
  });

  test("canvas - callbacks run on a worker that implements them, with the sender's client already closed", async () => {
    const ns = freshNamespace();
    const k = counters();
    await using w = mathWorker(ns, k);
    await w.start();
    await using reports = worker(server, ns, { queues: ["reports"] }).implement(report, (results) => `total ${results.join("+")}`);
    await reports.start();
    const sender = await client(server, ns);
    const h = await apply(sender, chord([call(slowEcho, { ms: 300, value: 1 }), call(slowEcho, { ms: 100, value: 2 })], call(report)));
    const id = h.id;
    await sender.close();
    await using reader = await client(server, ns);
    assert.equal(await reader.task(id, report).result({ timeout: 10_000 }), "total 1+2");
    const record = (await reader.status(id)).record!;
    assert.equal(record.worker?.id, reports.identity.id, "ran on the reports worker");
  });

  test("canvas - invalid arguments are refused before anything is sent, with the schema's message", async () => {
    const ns = freshNamespace();
    await using c = await client(server, ns);
    await c.ensureTopology();
    await assert.rejects(apply(c, chain(call(add, { a: 1, b: "2" } as never), call(double))), /invalid arguments for task "canvas\.add": b: Invalid type/);
    await assert.rejects(apply(c, group([call(double, 1), call(double, "x" as never)])), /invalid arguments for task "canvas\.double"/);
    const jsm = await c.jsm();
    assert.equal((await jsm.streams.info(c.names.tasksStream)).state.messages, 0);
  });
});
