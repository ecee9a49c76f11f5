/** Canvas as plain data: shapes, validation messages, ids, normalisation and the messages sent (no server). */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import type { MsgHdrs } from "@nats-io/nats-core";
import { decode, HEADER, names, PROTOCOL_VERSION, STATE, type ResultRecord, type TaskMessage } from "../../sdk/protocol/mod.ts";
import { signature } from "../../sdk/signatures/mod.ts";
import {
  afterTask,
  apply,
  call,
  callImmutable,
  chain,
  chord,
  chunks,
  compile,
  group,
  link,
  map,
  starmap,
  withLink,
  withLinkError,
  type ApplyClient,
  type Callbacks,
  type ChainHandle,
  type ChordHandle,
  type ChordSpec,
  type GroupHandle,
  type Node,
  type ResultOf,
  type TaskResult,
} from "../../sdk/canvas/mod.ts";

const add = signature("canvas.add", { args: v.object({ a: v.number(), b: v.number() }), result: v.number() });
const double = signature("canvas.double", { args: v.number(), result: v.number(), queue: "math", retries: 2 });
const label = signature("canvas.label", { args: v.object({ prefix: v.string(), parent: v.number() }), result: v.string() });
const batch = signature("canvas.batch", { args: v.array(v.number()), result: v.number() });
const pair = signature("canvas.pair", { args: v.tuple([v.number(), v.number()]), result: v.number() });

interface Sent {
  subject: string;
  headers: MsgHdrs | undefined;
  body: unknown;
}

/** A client that records what it would publish (and a JetStream manager that knows no chord state). */
function fakeClient(): ApplyClient & { sent: Sent[] } {
  const sent: Sent[] = [];
  return {
    sent,
    names: names("unit"),
    settings: {},
    pushEvent: () => {},
    publisher: {
      publish: async (subject: string, data: Uint8Array, headers?: MsgHdrs) => {
        sent.push({ subject, headers, body: decode(data) });
        return { stream: "x", seq: sent.length, duplicate: false };
      },
    },
    jsm: async () => ({ streams: { info: async () => ({}), getMessage: async () => null } }) as never,
    task: (id: string) => ({ id, result: async () => undefined, ready: async () => false, status: async () => ({ id, state: STATE.pending }) }),
  };
}

const tasks = (sent: Sent[]) => sent.filter((s) => s.subject.startsWith("unit.tasks.") || s.subject.startsWith("unit.scheduled.")).map((s) => s.body as TaskMessage);

test("canvas - call() is a frozen plain object in Celery's shape, with the signature's defaults", () => {
  const c = call(double, 21, { priority: 3 });
  assert.deepEqual({ ...c }, { kind: "call", task: "canvas.double", args: 21, options: { queue: "math", retries: 2, priority: 3 } });
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.options));
  assert.equal(c.signature, double, "the signature is kept, not enumerable");
  assert.deepEqual(JSON.parse(JSON.stringify(c)), { kind: "call", task: "canvas.double", args: 21, options: { queue: "math", retries: 2, priority: 3 } });
  assert.deepEqual({ ...callImmutable("reports.send", { to: "ops" }) }, { kind: "call", task: "reports.send", args: { to: "ops" }, options: {}, immutable: true });
  assert.deepEqual({ ...call(double) }, { kind: "call", task: "canvas.double", options: { queue: "math", retries: 2 } }, "no args: the previous result is the args");
});

test("canvas - chain, group and chord are frozen plain data; withLink returns a new canvas", () => {
  const a = call(add, { a: 1, b: 2 });
  const ch = chain(a, call(double));
  assert.equal(ch.kind, "chain");
  assert.equal(ch.steps.length, 2);
  assert.ok(Object.isFrozen(ch) && Object.isFrozen(ch.steps));
  const g = group([a, a], { id: "g" });
  assert.deepEqual(g.options, { id: "g" });
  const c1 = chord([a, a], call(batch));
  assert.equal(c1.header.kind, "group");
  assert.deepEqual(c1.options, { onError: "fail" });
  assert.equal(chord(g, call(batch), { onError: "partial" }).options.onError, "partial");
  const linked = withLinkError(withLink(a, call(double)), callImmutable("ops.alert", {}));
  assert.equal(a.link, undefined, "the original is unchanged");
  assert.equal(linked.link?.length, 1);
  assert.equal(linked.linkError?.length, 1);
  assert.equal(linked.signature, add);
  assert.ok(Object.isFrozen(linked));
});

test("canvas - known arguments are checked at build time with the schema's message", () => {
  assert.throws(() => callImmutable(add, { a: 1, b: "x" } as never), {
    name: "InvalidArgumentsError",
    message: 'invalid arguments for task "canvas.add": b: Invalid type: Expected number but received "x"',
  });
  assert.throws(() => map(double, [1, "2" as never]), { name: "InvalidArgumentsError", message: 'invalid arguments for task "canvas.double": Invalid type: Expected number but received "2"' });
  assert.throws(() => chunks(batch, [1, 2, "x" as never], 2), { name: "InvalidArgumentsError", message: 'invalid arguments for task "canvas.batch": 0: Invalid type: Expected number but received "x"' });
  // A mutable call's args may be partial (the previous result arrives later): not checked yet.
  assert.doesNotThrow(() => call(label, { prefix: "n=" }));
});

test("canvas - shapes that cannot run are refused with what to do", () => {
  assert.throws(() => (chain as (...steps: unknown[]) => unknown)(), { message: "chain() needs at least one step" });
  assert.throws(() => chain(add as never), { message: /chain\(\) step 0 must be a canvas .*: wrap the signature in call\(canvas\.add, args\)/ });
  assert.throws(() => chunks(batch, [1], 0), { message: 'chunks("canvas.batch"): size = 0 must be a positive integer' });
  assert.throws(() => starmap(pair, [5 as never]), { message: 'starmap("canvas.pair") item 0 must be an array of arguments, got number 5' });
  assert.throws(() => map(double, [1], { id: "x" }), { message: /option "id" names one task; give the group an id instead/ });
  assert.throws(() => chord([], call(batch), { onError: "ignore" as never }), { message: 'chord() option "onError" = "ignore" must be "fail" or "partial"' });
  assert.throws(() => call(add, { a: 1, b: 1 }, { priority: 12 }), { message: 'call("canvas.add"): option "priority" = 12 must be an integer from 0 to 9' });
  assert.throws(() => call("bad name"), { message: /task name "bad name" is invalid/ });
  assert.throws(() => compile(chord([chain(call(add, { a: 1, b: 1 }), group([call(double), call(double)]))], call(batch)), "c"), {
    message: /chord header member 0 ends in a group: a chord counts one result per member/,
  });
  assert.throws(() => compile(group([call(add, { a: 1, b: 1 }, { id: "same" }), call(add, { a: 1, b: 1 }, { id: "same" })]), "g"), {
    message: 'task id "same" is used twice in this canvas: ids must be unique (they are the dedupe keys)',
  });
});

test("canvas - map, starmap and chunks make one immutable call per item or chunk", () => {
  const m = map(double, [1, 2]);
  assert.deepEqual(m.members.map((c) => (c as { args: unknown }).args), [1, 2]);
  assert.ok(m.members.every((c) => (c as { immutable?: boolean }).immutable));
  assert.deepEqual(starmap(pair, [[1, 2], [3, 4]]).members.map((c) => (c as { args: unknown }).args), [[1, 2], [3, 4]]);
  assert.deepEqual(chunks(batch, [1, 2, 3, 4, 5], 2).members.map((c) => (c as { args: unknown }).args), [[1, 2], [3, 4], [5]]);
  assert.equal(chunks(batch, [], 3).members.length, 0);
});

test("canvas - compile derives every id from the canvas id and folds a group followed by a step into a chord", () => {
  const { node } = compile(chain(call(add, { a: 1, b: 2 }), group([call(double), call(double)]), call(batch), call(double)), "r") as { node: Node };
  assert.equal(node.kind, "chain");
  const [first, rest] = (node as { steps: Node[] }).steps;
  assert.deepEqual([first!.kind, (first as { id: string }).id], ["call", "r.0"]);
  assert.equal(rest!.kind, "chord");
  const ch = rest as Extract<Node, { kind: "chord" }>;
  assert.equal(ch.id, "r.1");
  assert.deepEqual(ch.header.map((m) => (m as { id: string }).id), ["r.1.0", "r.1.1"]);
  assert.deepEqual((ch.body as { steps: { id: string }[] }).steps.map((s) => s.id), ["r.1.cb.0", "r.1.cb.1"]);

  const linked = compile(withLinkError(chain(withLink(call(add, { a: 1, b: 1 }), call(double)), call(double)), call("ops.alert")), "L") as { node: Node };
  const steps = (linked.node as { steps: Extract<Node, { kind: "call" }>[] }).steps;
  assert.deepEqual(steps[0]!.link?.map((l) => (l as { id: string }).id), ["L.0.l0"]);
  assert.deepEqual(steps.map((s) => s.linkError?.map((l) => (l as { id: string }).id)), [["L.0.e0"], ["L.1.e0"]], "a chain's error callback covers every step");

  const alone = compile(call(add, { a: 1, b: 1 }), "solo") as { node: Node };
  assert.equal((alone.node as { id: string }).id, "solo");
});

test("canvas - apply sends the first step with the rest of the chain in its callbacks", async () => {
  const c = fakeClient();
  const h = await apply(c, chain(call(add, { a: 1, b: 2 }), call(double, undefined, { countdown: 5 }), callImmutable(label, { prefix: "x", parent: 0 })), { id: "ch" });
  assert.equal(h.id, "ch.2");
  assert.equal(h.first.id, "ch.0");
  const sent = tasks(c.sent);
  assert.equal(sent.length, 1, "only the first step is sent; workers send the rest");
  const [m] = sent;
  assert.equal(c.sent[0]!.subject, "unit.tasks.default.0");
  assert.equal(c.sent[0]!.headers?.get(HEADER.msgId), "ch.0");
  assert.deepEqual([m!.v, m!.id, m!.task, m!.args, m!.meta], [PROTOCOL_VERSION, "ch.0", "canvas.add", { a: 1, b: 2 }, { rootId: "ch" }]);
  const next = (m!.callbacks as Callbacks).next as Extract<Node, { kind: "chain" }>;
  assert.deepEqual(next.steps.map((s) => (s as { id: string }).id), ["ch.1", "ch.2"]);
  assert.deepEqual((next.steps[0] as { options?: unknown }).options, { queue: "math", retries: 2, countdown: 5 });
});

test("canvas - apply refuses invalid first-step arguments before publishing anything", async () => {
  const c = fakeClient();
  await assert.rejects(apply(c, chain(call(add, { a: 1 } as never), call(double))), {
    name: "InvalidArgumentsError",
    message: 'invalid arguments for task "canvas.add": b: Invalid key: Expected "b" but received undefined',
  });
  await assert.rejects(apply(c, group([call(double, 1), call(double)])), { name: "InvalidArgumentsError" });
  await assert.rejects(apply(c, chain(call(add, { a: 1, b: 1 }), call(double)), { id: "bad id!" }), { name: "ProtocolError", message: /task id "bad id!\.0" is invalid/ });
  assert.equal(c.sent.length, 0);
  // A later, mutable step is checked by the worker that receives it (its args are not known yet).
  await apply(c, chain(call(add, { a: 1, b: 1 }), call(label, { prefix: ">" })));
  assert.equal(tasks(c.sent).length, 1);
});

test("canvas - apply stores a chord's definition once, then sends each member with its membership", async () => {
  const c = fakeClient();
  const h = await apply(c, chord([call(add, { a: 1, b: 1 }), call(double, 4)], call(batch), { id: "cd" }));
  assert.equal(h.id, "cd.cb");
  assert.equal(h.chordId, "cd");
  const spec = c.sent.find((s) => s.subject === "$KV.unit_chords.spec.cd")!;
  assert.equal(spec.headers?.get("Nats-Expected-Last-Subject-Sequence"), "0", "created once: a rerun keeps the first");
  const body = spec.body as ChordSpec;
  assert.deepEqual([body.id, body.n, body.ids, body.onError, (body.body as { id: string }).id], ["cd", 2, ["cd.0", "cd.1"], "fail", "cd.cb"]);
  assert.ok(c.sent.indexOf(spec) < c.sent.findIndex((s) => s.subject.startsWith("unit.tasks.")), "stored before any member is sent");
  const members = tasks(c.sent);
  assert.deepEqual(members.map((m) => [m.id, (m.callbacks as Callbacks).member]), [
    ["cd.0", { chord: "cd", i: 0, n: 2, body: [{ id: "cd.cb", task: "canvas.batch" }] }],
    ["cd.1", { chord: "cd", i: 1, n: 2, body: [{ id: "cd.cb", task: "canvas.batch" }] }],
  ]);
  assert.equal(c.sent.find((s) => s.subject === "unit.tasks.math.0")?.headers?.get(HEADER.msgId), "cd.1");

  const empty = fakeClient();
  await apply(empty, chord([], call(batch), { id: "e" }));
  assert.deepEqual(tasks(empty.sent).map((m) => [m.id, m.args]), [["e.cb", []]], "no members: the callback is sent at once with []");
});

test("canvas - afterTask sends the next step with the result, error callbacks with the failure, legacy links too", async () => {
  const c = fakeClient();
  const record = (state: ResultRecord["state"], extra: Partial<ResultRecord>): ResultRecord => ({ v: 1, id: "p", task: "canvas.add", state, ...extra });
  const parent: TaskMessage = {
    v: 1, id: "p", task: "canvas.add", args: {}, queue: "default", sentAt: 0, meta: { rootId: "root" },
    callbacks: {
      next: { kind: "call", id: "p.n", task: "canvas.label", args: { prefix: "=" } },
      link: [{ task: "legacy.done" }],
      linkError: [{ kind: "call", task: "ops.alert", args: { level: "high" } }],
    } satisfies Callbacks,
  };
  await afterTask(c, parent, record(STATE.success, { result: 7 }));
  const ok = tasks(c.sent);
  assert.deepEqual(ok.map((m) => [m.id, m.task, m.args, m.meta]), [
    ["p.l0", "legacy.done", 7, { rootId: "root", parentId: "p" }],
    ["p.n", "canvas.label", { prefix: "=", parent: 7 }, { rootId: "root", parentId: "p" }],
  ]);
  c.sent.length = 0;
  const error = { type: "TypeError", message: "no", retryable: false };
  await afterTask(c, parent, record(STATE.failure, { error }));
  assert.deepEqual(tasks(c.sent).map((m) => [m.id, m.args]), [["p.e0", { level: "high", parent: { taskId: "p", task: "canvas.add", error } }]]);
  c.sent.length = 0;
  await afterTask(c, parent, record(STATE.revoked, {}));
  assert.equal(tasks(c.sent).length, 0, "a revoked task sends nothing");
  // The rest of its chain never runs: its last task is recorded REVOKED, created only if absent.
  assert.deepEqual(c.sent.map((s) => [s.subject, (s.body as ResultRecord).id, (s.body as ResultRecord).state, s.headers?.get("Nats-Expected-Last-Subject-Sequence")]), [["$KV.unit_results.p.n", "p.n", STATE.revoked, "0"]]);
});

test("canvas - link() accepts calls for send(): they travel without ids and get the parent's derived ids", async () => {
  const cb = link(call(double), callImmutable("ops.note", { n: 1 }, { queue: "ops" }));
  assert.deepEqual(cb.link, [
    { kind: "call", task: "canvas.double", options: { queue: "math", retries: 2 } },
    { kind: "call", task: "ops.note", args: { n: 1 }, immutable: true, options: { queue: "ops" } },
  ]);
  const c = fakeClient();
  await afterTask(c, { v: 1, id: "t", task: "x.y", args: null, queue: "default", sentAt: 0, callbacks: cb }, { v: 1, id: "t", task: "x.y", state: STATE.success, result: 4 });
  assert.deepEqual(c.sent.map((s) => [s.subject, s.headers?.get(HEADER.msgId), (s.body as TaskMessage).args, (s.body as TaskMessage).maxRetries]), [
    ["unit.tasks.math.0", "t.l0", 4, 2],
    ["unit.tasks.ops.0", "t.l1", { n: 1 }, undefined],
  ]);
});

// Types only: these lines are checked by `tsc`, never run.
export async function typeChecks(c: ApplyClient): Promise<void> {
  const one: Promise<TaskResult<number>> = apply(c, call(add, { a: 1, b: 2 }));
  const chained: ChainHandle<number> = await apply(c, chain(call(add, { a: 1, b: 2 }), call(double)));
  const last: number = await chained.result();
  const grouped: GroupHandle<[number, string]> = await apply(c, group([call(add, { a: 1, b: 2 }), call(label, { prefix: "a" })]));
  const [n, s]: [number, string] = await grouped.result();
  const chorded: ChordHandle<number> = await apply(c, chord([call(add, { a: 1, b: 2 })], call(batch)));
  const mapped: number[] = await (await apply(c, map(double, [1, 2]))).result();
  const r: ResultOf<typeof chorded extends ChordHandle<infer R> ? ChordHandle<R> : never> = undefined as unknown;
  // @ts-expect-error the arguments must match the schema's input type
  call(add, { a: "1", b: 2 });
  // @ts-expect-error an immutable call needs complete arguments
  callImmutable(label, { prefix: "x" });
  // @ts-expect-error map items are the signature's arguments
  map(double, ["x"]);
  // @ts-expect-error chunks items are the elements of an array argument
  chunks(batch, [[1]], 2);
  void [one, last, n, s, mapped, r];
}
