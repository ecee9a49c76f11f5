/**
 * The client's hand-written encoders (sdk/client/wire.ts, over sdk/protocol/writer.ts) must write
 * the very bytes msgpackr writes for the same objects: the wire stays what docs/protocol.md §3
 * describes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decode, encode as encodeByWriter, EVENT, HEADER, MAX_NESTING, PROTOCOL_VERSION, ProtocolError } from "../../sdk/protocol/mod.ts";
// The reference is msgpackr itself: encode() is now written by the same MessagePackWriter.
import { msgpackrPack as encode } from "../../sdk/protocol/codec.ts";
import { taskMessage, type TaskOptions } from "../../sdk/signatures/mod.ts";
import { encodeEventBatch, encodeTask, fixedHeaders, parsePubAck, randomTaskId } from "../../sdk/client/wire.ts";
import { MsgHdrsImpl } from "@nats-io/nats-core";

const STRINGS = ["", "a", "x".repeat(31), "x".repeat(32), "x".repeat(63), "x".repeat(64), "y".repeat(255), "z".repeat(256), "é", "é".repeat(20), "é".repeat(40), "日本".repeat(30), "😀", "a😀b".repeat(20), "\ud800", "x".repeat(70) + "\ud800", "w".repeat(70000)];
const NUMBERS = [0, 1, 31, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, 0.5, -0.5, 1795425149037, NaN, Infinity, -Infinity, -0];
const ARGS: unknown[] = [
  { i: 1 },
  undefined,
  null,
  [1, "two", { three: 3 }],
  { when: new Date(0), nested: { deep: [true, false, null] }, big: 2n ** 40n, bytes: new Uint8Array([1, 2, 3]) },
  "just a string",
  42,
  { s: "é".repeat(50), m: new Map([["k", 1]]) },
];
const OPTIONS: TaskOptions[] = [
  {},
  { priority: 3, expires: 60, retries: 2, retryDelay: 0.5, retryDelayMax: 10, autoretryFor: ["TimeoutError"], softTimeLimit: 5, timeLimit: 10 },
];

function messages() {
  const out = [];
  let n = 0;
  for (const args of ARGS) {
    for (const options of OPTIONS) {
      for (const extra of [{}, { eta: 1795425150000, meta: { parentId: "p", m: { k: 1 } }, callbacks: { link: [{ task: "t.next", args: { x: 1 } }] } }]) {
        const id = n % 3 === 0 ? crypto.randomUUID() : n % 3 === 1 ? "key-0123456789abcdef" : "x".repeat(100);
        out.push(taskMessage({ id, task: "demo.echo", args, queue: "default", sentAt: 1795425149037 + n, replyTo: `_INBOX.abc.${id}`, ...extra }, options));
        n++;
      }
    }
  }
  return out;
}

test("wire - encodeTask writes what encode() writes, for every kind of field", () => {
  for (const m of messages()) {
    for (const withEvent of [true, false]) {
      const t = encodeTask(m, withEvent);
      assert.deepEqual(Buffer.from(t.body), Buffer.from(encode(m)), JSON.stringify(Object.keys(m)));
      assert.equal(t.sentEvent === undefined, !withEvent);
    }
  }
});

class MyArray<T> extends Array<T> {}

test("wire - args of every shape the writer handles by hand (or hands to msgpackr) come out as encode() writes them", () => {
  class Point {
    x = 1;
    y = "two";
  }
  class WithJson {
    a = 1;
    toJSON() {
      return { j: "son" };
    }
  }
  const nullProto = Object.create(null) as Record<string, unknown>;
  nullProto.k = "v";
  const inherited = Object.create({ hidden: 1 }) as Record<string, unknown>;
  inherited.own = 2;
  const deep: Record<string, unknown> = {};
  let at = deep;
  for (let i = 0; i < MAX_NESTING - 2; i++) at = (at.n = {}) as Record<string, unknown>;
  const wide: Record<string, number> = {};
  for (let i = 0; i < 0xffff; i++) wide[`k${i}`] = i;
  const shapes: Record<string, unknown> = {
    undefinedInside: { a: undefined, b: [undefined, 1], c: null },
    // eslint-disable-next-line no-sparse-arrays
    sparse: [1, , 3],
    classInstance: { p: new Point() },
    toJSON: { w: new WithJson(), plain: { a: 1, toJSON: () => "no" } },
    nullPrototype: { n: nullProto },
    inheritedKeys: { i: inherited },
    integerKeys: { b: 1, 2: "two", 1: "one", a: 0 },
    ownHasOwnProperty: { hasOwnProperty: 1, x: 2 },
    ownConstructorKey: JSON.parse('{"constructor": 1, "a": [2]}'),
    ownConstructorAndToJSON: { o: Object.assign(JSON.parse('{"constructor": 1}'), { toJSON: () => ({ via: "toJSON" }) }) },
    arraySubclass: { a: MyArray.from([1, "two", { three: 3 }]) },
    toJSONReturningItself: { s: new (class Self { x = 1; toJSON() { return this; } })() },
    boxed: { n: new Number(5), s: new String("s") },
    dateErrorRegExp: { d: new Date(1795425149037), e: new Error("boom"), r: /x/g, ab: new ArrayBuffer(3) },
    bytes: { u: new Uint8Array(300), e: new Uint8Array(0), b: Buffer.from("hi") },
    set: { s: new Set([1, "a", { o: [2] }]), empty: new Set() },
    map: { m: new Map<unknown, unknown>([["a", 1], [2, { x: [1] }], [null, "n"]]), empty: new Map(), big: new Map(Array.from({ length: 300 }, (_, i) => [`k${i}`, i])) },
    longArray: Array.from({ length: 70_000 }, (_, i) => i % 300),
    deep,
    wide,
  };
  for (const [name, args] of Object.entries(shapes)) {
    const m = taskMessage({ id: "id1", task: "t", args, queue: "q", sentAt: 1 }, {});
    const t = encodeTask(m, true);
    assert.deepEqual(Buffer.from(t.body), Buffer.from(encode(m)), name);
    assert.deepEqual(Buffer.from(t.sentEvent!), Buffer.from(encode({ type: EVENT.sent, id: "id1", task: "t", queue: "q", at: 1, args })), `${name}: task-sent event`);
  }
});

test("wire - typed arrays travel as bin of their own bytes (msgpackr would write one byte per element and stale bytes)", () => {
  const f = new Float64Array([1.5, 2.5, 300.25]);
  const i16 = new Int16Array([1, -1, 300]);
  const view = new DataView(new Uint8Array([9, 8, 7, 6]).buffer, 1, 2);
  const sub = new Float32Array(new Float32Array([1, 2, 3, 4]).buffer, 4, 2);
  const raw = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  for (let round = 0; round < 3; round++) {
    const nullProto = Object.assign(Object.create(null) as Record<string, unknown>, { f });
    const args = { f, nested: [{ i16 }], view, sub, big: new Float64Array(40_000), inMap: new Map([["f", f]]), inSet: new Set([i16]), inClass: new (class Holder { f = f })(), nullProto };
    const m = taskMessage({ id: "id1", task: "t", args, queue: "q", sentAt: 1 }, {});
    const body = encodeTask(m, true).body;
    const back = decode(body) as { args: { f: Uint8Array; nested: [{ i16: Uint8Array }]; view: Uint8Array; sub: Uint8Array; big: Uint8Array; inMap: { f: Uint8Array }; inSet: [Uint8Array] } };
    assert.deepEqual(Buffer.from(back.args.inMap.f), raw(f), "inside a Map");
    assert.deepEqual(Buffer.from((back.args as unknown as { inClass: { f: Uint8Array } }).inClass.f), raw(f), "inside a class instance");
    assert.deepEqual(Buffer.from((back.args as unknown as { nullProto: { f: Uint8Array } }).nullProto.f), raw(f), "inside a null-prototype object");
    assert.deepEqual(Buffer.from(back.args.inSet[0]), raw(i16), "inside a Set");
    assert.deepEqual(Buffer.from(back.args.f), raw(f));
    assert.deepEqual(Buffer.from(back.args.nested[0].i16), raw(i16));
    assert.deepEqual(Buffer.from(back.args.view), Buffer.from([8, 7]));
    assert.deepEqual(Buffer.from(back.args.sub), raw(sub));
    assert.equal(back.args.big.length, 320_000);
    // encode() (replies, progress, every other body) writes them the same way.
    assert.deepEqual(Buffer.from(encodeByWriter(args)), Buffer.from(encodeByWriter(args)), "deterministic");
    assert.deepEqual(Buffer.from((decode(encodeByWriter({ f })) as { f: Uint8Array }).f), raw(f));
  }
});

test("wire - encode() re-entered from user code (a toJSON that encodes) gives both values whole", () => {
  class Wrapper {
    constructor(readonly inner: unknown) {}
    toJSON() {
      return { nested: encodeByWriter(this.inner), kind: "wrapper" };
    }
  }
  const value = { a: 1, w: new Wrapper({ deep: [1, 2, 3] }), z: "end" };
  const back = decode(encodeByWriter(value)) as { a: number; w: { nested: Uint8Array; kind: string }; z: string };
  assert.equal(back.a, 1);
  assert.equal(back.z, "end");
  assert.equal(back.w.kind, "wrapper");
  assert.deepEqual(decode(back.w.nested), { deep: [1, 2, 3] });
});

test("wire - a task sent from user code while another task's args are written (toJSON) leaves both whole", () => {
  let inner: { body: Uint8Array; sentEvent: Uint8Array | undefined; headers: Uint8Array } | undefined;
  const innerMessage = taskMessage({ id: "inner", task: "t.inner", args: { x: [1, 2] }, queue: "q", sentAt: 2 }, {});
  class SendsWhileEncoded {
    toJSON() {
      // What client.send() does synchronously: encode the task, then publish (headers encoded).
      const t = encodeTask(innerMessage, true);
      inner = { ...t, headers: (fixedHeaders("Nats-Msg-Id", "inner", "Celerity-Task", "t.inner") as unknown as { encode(): Uint8Array }).encode() };
      return { sent: "inner" };
    }
  }
  const outer = taskMessage({ id: "outer", task: "t.outer", args: { a: 1, s: new SendsWhileEncoded(), z: "end" }, queue: "q", sentAt: 1 }, {});
  const expected = Buffer.from(encode({ ...outer, args: { a: 1, s: { sent: "inner" }, z: "end" } }));
  const t = encodeTask(outer, true);
  assert.deepEqual(Buffer.from(t.body), expected);
  assert.deepEqual(Buffer.from(inner!.body), Buffer.from(encode(innerMessage)));
  assert.equal(new TextDecoder().decode(inner!.headers), "NATS/1.0\r\nNats-Msg-Id: inner\r\nCelerity-Task: t.inner\r\n\r\n");
});

test("wire - args nested more than MAX_NESTING levels are refused with a clear error, and the next message is whole", () => {
  const deep: unknown[] = [];
  let at = deep;
  for (let i = 0; i < MAX_NESTING + 5; i++) {
    const next: unknown[] = [];
    at.push(next);
    at = next;
  }
  const m = taskMessage({ id: "id1", task: "t", args: deep, queue: "q", sentAt: 1 }, {});
  assert.throws(() => encodeTask(m, true), (err: unknown) => err instanceof ProtocolError && /nested more than 1000 levels/.test(err.message));
  const ok = taskMessage({ id: "id2", task: "t", args: [[[1]]], queue: "q", sentAt: 2 }, {});
  assert.deepEqual(Buffer.from(encodeTask(ok, true).body), Buffer.from(encode(ok)));
});

test("wire - strings and numbers are written as msgpackr writes them", () => {
  for (const s of STRINGS) {
    const m = taskMessage({ id: "id1", task: "t", args: s, queue: s, sentAt: 1 }, {});
    assert.deepEqual(Buffer.from(encodeTask(m, true).body), Buffer.from(encode(m)), `string of length ${s.length}`);
  }
  for (const x of NUMBERS) {
    const m = taskMessage({ id: "id1", task: "t", args: null, queue: "q", sentAt: x }, {});
    assert.deepEqual(Buffer.from(encodeTask(m, true).body), Buffer.from(encode(m)), `number ${x}`);
  }
});

/** The task-sent event of `m` as the client built it before wire.ts. */
function sentEventObject(m: ReturnType<typeof taskMessage>) {
  const extras = { ...(m.eta ? { eta: m.eta } : {}), ...(m.expires ? { expires: m.expires } : {}), ...(m.priority ? { priority: m.priority } : {}) };
  return { type: EVENT.sent, id: m.id, task: m.task, queue: m.queue, at: m.sentAt, args: m.args, ...extras };
}

test("wire - the task-sent event and its batch are what encode() writes for the objects", () => {
  const events: Uint8Array[] = [];
  const objects: object[] = [];
  for (const m of messages()) {
    const object = sentEventObject(m);
    const bytes = encodeTask(m, true).sentEvent!;
    assert.deepEqual(Buffer.from(bytes), Buffer.from(encode(object)));
    events.push(bytes);
    objects.push(object);
  }
  assert.deepEqual(Buffer.from(encodeEventBatch(PROTOCOL_VERSION, events)), Buffer.from(encode({ v: PROTOCOL_VERSION, events: objects })));
  // Mixed (events encoded by msgpackr, as EventBuffer.push does for objects) and large batches too:
  // [encoded event, its object].
  const pairs = events.map((e, i) => [e, objects[i]!] as const);
  const mixed = [...pairs, ...pairs.map(([, o]) => [encode(o), o] as const)];
  const many = Array.from({ length: 600 }, (_, i) => (i % 2 ? pairs[i % pairs.length]! : ([encode(objects[i % objects.length]!), objects[i % objects.length]!] as const)));
  for (const list of [mixed, many, []]) {
    const given = list.map(([e]) => e);
    const plain = list.map(([, o]) => o);
    assert.deepEqual(Buffer.from(encodeEventBatch(PROTOCOL_VERSION, given)), Buffer.from(encode({ v: PROTOCOL_VERSION, events: plain })));
  }
});

test("wire - a task-sent event leaves out args larger than its limit, naming their size", () => {
  for (const m of messages()) {
    const argsBytes = encode(m.args).length;
    const { body, sentEvent } = encodeTask(m, true, argsBytes - 1);
    assert.deepEqual(Buffer.from(body), Buffer.from(encode(m)), "the task itself is whole");
    const { type, id, task, queue, at, args: _args, ...extras } = sentEventObject(m);
    const expected = { type, id, task, queue, at, omitted: { args: argsBytes }, ...extras };
    assert.deepEqual(Buffer.from(sentEvent!), Buffer.from(encode(expected)));
    // At the limit they still travel.
    assert.deepEqual(Buffer.from(encodeTask(m, true, argsBytes).sentEvent!), Buffer.from(encode(sentEventObject(m))));
  }
});

test("wire - views handed out are never written again", () => {
  const first = messages().map((m) => ({ m, body: encodeTask(m, true).body }));
  const copies = first.map(({ body }) => Buffer.from(body));
  for (let i = 0; i < 2000; i++) encodeTask(first[i % first.length]!.m, true);
  first.forEach(({ body }, i) => assert.deepEqual(Buffer.from(body), copies[i]));
});

test("wire - fixedHeaders encode like nats.js headers and read like them", () => {
  const id = crypto.randomUUID();
  const fast = fixedHeaders(HEADER.msgId, id, HEADER.task, "demo.echo") as MsgHdrsImpl;
  const slow = new MsgHdrsImpl();
  slow.set(HEADER.msgId, id);
  slow.set(HEADER.task, "demo.echo");
  assert.deepEqual(Buffer.from(fast.encode()), Buffer.from(slow.encode()));
  assert.equal(fast.get(HEADER.msgId), id);
  assert.equal(fast.get(HEADER.task), "demo.echo");
  // Changed like any MsgHdrs, they encode the change.
  fast.set(HEADER.id, id);
  slow.set(HEADER.id, id);
  assert.deepEqual(Buffer.from(fast.encode()), Buffer.from(slow.encode()));
});

test("wire - parsePubAck reads stored and duplicate acks, and leaves everything else to JSON", () => {
  const te = new TextEncoder();
  const cases: Array<[string, unknown]> = [
    // What nats-server 2.9.10 writes (test/integration/core.test.ts sends through it too).
    ['{"stream":"celerity_tasks", "seq":60001}', { stream: "celerity_tasks", seq: 60001, duplicate: false }],
    ['{"stream":"celerity_tasks", "seq":60001,"duplicate": true}', { stream: "celerity_tasks", seq: 60001, duplicate: true }],
    ['{"stream":"celerity_tasks","seq":42}', { stream: "celerity_tasks", seq: 42, duplicate: false }],
    ['{"stream":"celerity_tasks","seq":42,"duplicate":true}', { stream: "celerity_tasks", seq: 42, duplicate: true }],
    ['{"stream":"s", "seq":1, "duplicate":true }', { stream: "s", seq: 1, duplicate: true }],
    ['{"stream":"s", "seq":1}x', undefined],
    ['{"stream":"s", "seq":}', undefined],
    ['{"stream":"celerity_tasks","seq":9007199254740991,"duplicate":true}', { stream: "celerity_tasks", seq: 9007199254740991, duplicate: true }],
    ['{"stream":"KV_celerity_results","seq":1}', { stream: "KV_celerity_results", seq: 1, duplicate: false }],
    ['{"stream":"s","seq":7,"domain":"hub"}', { stream: "s", seq: 7, duplicate: false }],
    ['{"stream":"s","domain":"hub","seq":7}', { stream: "s", seq: 7, duplicate: false }],
    ['{"stream":"s","seq":7,"duplicate":false}', { stream: "s", seq: 7, duplicate: false }],
    ['{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"s","seq":0}', { error: { code: 503, description: "maximum messages exceeded" } }],
    ['{"stream":"sé","seq":3}', { stream: "sé", seq: 3, duplicate: false }],
    [' {"stream":"s","seq":3}', { stream: "s", seq: 3, duplicate: false }],
    ["not json", undefined],
    ["", undefined],
  ];
  for (const [text, expected] of cases) {
    const got = parsePubAck(te.encode(text));
    if (expected === undefined) assert.equal(got, undefined, text);
    else if ("error" in (expected as object)) {
      assert.ok(got?.error, text);
      assert.equal(got.error.code, 503);
      assert.equal(got.error.description, "maximum messages exceeded");
    } else assert.deepEqual(got, expected, text);
  }
});

test("wire - messages and batches of any size, in any order, come out whole", () => {
  const all = messages();
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const pending: Array<[Uint8Array, Buffer]> = [];
  for (let round = 0; round < 3000; round++) {
    const m = all[rnd(all.length)]!;
    const t = encodeTask(m, true);
    pending.push([t.body, Buffer.from(encode(m))]);
    const ev = t.sentEvent!;
    pending.push([ev, Buffer.from(encode(sentEventObject(m)))]);
    if (rnd(10) === 0) {
      // Batches of every size up to 700 events, so some end near their chunk's end.
      const events = Array.from({ length: round % 700 }, () => ev);
      assert.equal(encodeEventBatch(PROTOCOL_VERSION, events).length > 0, true);
    }
  }
  for (const [view, copy] of pending) assert.deepEqual(Buffer.from(view), copy);
});

test("wire - randomTaskId makes distinct UUID v4s", () => {
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const id = randomTaskId();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 5000);
});

test("wire - parsePubAck reads nats-server's stored and duplicate acks without JSON.parse", () => {
  const te = new TextEncoder();
  const parse = JSON.parse;
  let calls = 0;
  JSON.parse = (...a: Parameters<typeof JSON.parse>) => (calls++, parse(...a));
  try {
    for (const text of ['{"stream":"celerity_tasks", "seq":60001}', '{"stream":"celerity_tasks", "seq":60001,"duplicate": true}', '{"stream":"KV_celerity_results","seq":7}']) {
      assert.ok(parsePubAck(te.encode(text)), text);
    }
  } finally {
    JSON.parse = parse;
  }
  assert.equal(calls, 0);
});
