/**
 * The worker's hand-written encoders (sdk/worker/wire.ts) must write the very bytes msgpackr writes
 * for the same objects: the wire stays what docs/protocol.md §3 describes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeEventBatch, EVENT, parseAckSubject, PROTOCOL_VERSION, STATE, type ResultRecord, type TaskEvent } from "../../sdk/protocol/mod.ts";
// The reference is msgpackr itself: encode() is now written by the same MessagePackWriter.
import { msgpackrPack as encode } from "../../sdk/protocol/codec.ts";
import { deliveryCountOf, encodeRecord, TaskEvents } from "../../sdk/worker/wire.ts";
import type { AckedPublisher } from "../../sdk/client/mod.ts";
import type { NatsConnection } from "@nats-io/nats-core";

const STRINGS = ["", "a", "x".repeat(31), "x".repeat(32), "x".repeat(127), "y".repeat(255), "z".repeat(256), "w".repeat(65535), "v".repeat(65536), "é", "日本".repeat(30), "a😀b", "\ud800", "x".repeat(70) + "\ud800", "é".repeat(40)];
const NUMBERS = [0, 1, 31, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, 0.5, -0.5, 1795425149037, 1795425149037.5, NaN, Infinity, -Infinity, -0];
const VALUES: unknown[] = [undefined, null, true, 0, 1795425149037, "é", { i: 1 }, [1, "two", { three: 3 }], { when: new Date(0), big: 2n ** 40n, bytes: new Uint8Array([1, 2, 3]) }, new Map([["k", 1]]), "x".repeat(70000)];
const identity = { id: "vm-123-abcd", host: "vm", pid: 123 };
const identityBytes = encode(identity).slice();

function record(id: string, task: string, queue: string, n: number, extra: Partial<ResultRecord>): ResultRecord {
  return { v: PROTOCOL_VERSION, id, task, state: STATE.success, queue, retries: 0, worker: identity, sentAt: n, receivedAt: n + 1, finishedAt: n + 2, ...extra };
}

function same(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.deepEqual(Buffer.from(actual), Buffer.from(expected), what);
}

test("worker wire - encodeRecord writes what encode() writes, final or not", () => {
  const records: ResultRecord[] = [];
  for (const s of STRINGS) records.push(record(s, s, s, 1795425149037, { result: s }));
  for (const x of NUMBERS) records.push(record("id", "t", "q", x, { retries: x, result: x, startedAt: x }));
  for (const v of VALUES) records.push(record("id", "t", "q", 1, { result: v }));
  records.push(record("id", "t", "q", 1, { state: STATE.failure, error: { type: "TypeError", message: "é bad", retryable: false, details: { issues: [] } } }));
  records.push(record("id", "t", "q", 1, { worker: { id: "other", host: "h", pid: 70000 } }));
  const retry = record("id", "t", "q", 1, { state: STATE.retry });
  delete retry.finishedAt;
  records.push(retry);
  for (const r of records) {
    for (const final of [true, false]) {
      const { body, result } = encodeRecord(r, final, identity, identityBytes);
      same(body, encode(final ? { kind: "result", ...r } : r), `${JSON.stringify(Object.keys(r))} ${String(r.result).slice(0, 20)}`);
      if ("result" in r) same(result!, encode(r.result), "the result's bytes");
      else assert.equal(result, undefined);
    }
  }
});

test("worker wire - records handed out earlier are never overwritten", () => {
  const kept: { r: ResultRecord; body: Uint8Array }[] = [];
  for (let i = 0; i < 2000; i++) {
    const r = record(`id-${i}`, "t", "q", i, { result: { i, pad: "p".repeat(i % 300) } });
    kept.push({ r, body: encodeRecord(r, true, identity, identityBytes).body });
  }
  for (const { r, body } of kept) same(body, encode({ kind: "result", ...r }), r.id);
});

/** A publisher that keeps what it is given. */
function capture(): { publisher: AckedPublisher; nc: NatsConnection; bodies: Uint8Array[] } {
  const bodies: Uint8Array[] = [];
  const publisher = { publish: (_s: string, body: Uint8Array) => (bodies.push(body), Promise.resolve({ stream: "s", seq: 1, duplicate: false })) } as unknown as AckedPublisher;
  // A max_payload far above the batches here: only the 500-event limit cuts them.
  const nc = { isClosed: () => false, info: { max_payload: 64 * 1024 * 1024 } } as unknown as NatsConnection;
  return { publisher, nc, bodies };
}

test("worker wire - TaskEvents batches write what encode({ v, events }) writes", async () => {
  for (const size of [1, 15, 16, 17, 500]) {
    const { publisher, nc, bodies } = capture();
    const events = new TaskEvents(publisher, "celerity.events.task", nc, identity.id, 500, 5);
    const expected: TaskEvent[] = [];
    for (let i = 0; i < size; i++) {
      const s = STRINGS[i % STRINGS.length]!;
      const x = NUMBERS[i % NUMBERS.length]!;
      const v = VALUES[i % VALUES.length];
      events.state(EVENT.received, s, "t", "q", x, i);
      expected.push({ type: EVENT.received, id: s, task: "t", queue: "q", at: x, worker: identity.id, retries: i });
      events.state(EVENT.started, "id", s, "q", 1795425149037, x);
      expected.push({ type: EVENT.started, id: "id", task: s, queue: "q", at: 1795425149037, worker: identity.id, retries: x });
      events.succeeded("id", "t", s, 1795425149037, encode(v), x);
      expected.push({ type: EVENT.succeeded, id: "id", task: "t", queue: s, at: 1795425149037, worker: identity.id, result: v, runtimeMs: x });
      const other: TaskEvent = { type: EVENT.progress, id: "id", task: "t", queue: "q", at: 1, worker: identity.id, progress: v };
      events.push(other);
      expected.push(other);
    }
    await events.close();
    // 500 events make a batch: the rest follows in the next.
    const batches: TaskEvent[][] = [];
    for (let i = 0; i < expected.length; i += 500) batches.push(expected.slice(i, i + 500));
    assert.equal(bodies.length, batches.length, `${size}: batches`);
    bodies.forEach((b, i) => same(b, encode({ v: PROTOCOL_VERSION, events: batches[i] }), `${size}: batch ${i}`));
    assert.equal(decodeEventBatch(bodies[0]!).events[0]!.worker, identity.id);
  }
});

test("worker wire - TaskEvents keeps each batch under max_payload and leaves out results over half of it", async () => {
  const { publisher, bodies } = capture();
  const maxPayload = 20_000;
  const nc = { isClosed: () => false, info: { max_payload: maxPayload } } as unknown as NatsConnection;
  const events = new TaskEvents(publisher, "s", nc, identity.id, 500, 5);
  const expected: TaskEvent[] = [];
  for (let i = 0; i < 12; i++) {
    const result = `${i}`.padEnd(3000, "r");
    events.succeeded(`id${i}`, "t", "q", 1, encode(result), i);
    expected.push({ type: EVENT.succeeded, id: `id${i}`, task: "t", queue: "q", at: 1, worker: identity.id, result, runtimeMs: i });
  }
  const huge = "h".repeat(12_000);
  events.succeeded("huge", "t", "q", 1, encode(huge), 1);
  expected.push({ type: EVENT.succeeded, id: "huge", task: "t", queue: "q", at: 1, worker: identity.id, omitted: { result: encode(huge).length }, runtimeMs: 1 });
  const progress = { type: EVENT.progress, id: "p", task: "t", queue: "q", at: 1, worker: identity.id, progress: huge } satisfies TaskEvent;
  events.push(progress);
  const { progress: _p, ...trimmed } = progress;
  expected.push({ ...trimmed, omitted: { progress: encode(huge).length } });
  await events.close();
  assert.ok(bodies.length >= 3, `${bodies.length} batches`);
  for (const b of bodies) assert.ok(b.length <= maxPayload - 4096, `a batch of ${b.length} bytes`);
  same(encode(bodies.flatMap((b) => decodeEventBatch(b).events)), encode(expected), "every event, in order");
});

test("worker wire - TaskEvents flushes within its delay, and counts a batch it could not store", async () => {
  const { publisher, nc, bodies } = capture();
  const events = new TaskEvents(publisher, "s", nc, "w", 500, 5);
  events.state(EVENT.received, "a", "t", "q", 1, 0);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(bodies.length, 1);
  const failing = { publish: () => Promise.reject(new Error("no")) } as unknown as AckedPublisher;
  const lost = new TaskEvents(failing, "s", nc, "w", 500, 5);
  lost.state(EVENT.received, "a", "t", "q", 1, 0);
  lost.state(EVENT.started, "a", "t", "q", 1, 0);
  await lost.close();
  assert.equal(lost.dropped, 2);
});

test("worker wire - deliveryCountOf reads what parseAckSubject reads", () => {
  const subjects = [
    "$JS.ACK.celerity_tasks.q-default.1.2.3.1795425149037000000.5",
    "$JS.ACK.celerity_tasks.q-default.12.2.3.1795425149037000000.0",
    "$JS.ACK.dom.hash.celerity_tasks.q-default.3.2.3.1795425149037000000.5.tok",
    "$JS.ACK.dom.hash.s.c.7.2.3.179.5.tok.x.y",
    "$JS.ACK.a.b.c",
    "$JS.ACK.s.c..2.3.4.5",
    "$JS.ACK.s.c.x.2.3.4.5",
    "$JS.ACK.a.b.c.d.e.f.g.h.i.j",
    "_INBOX.x",
    "",
  ];
  for (const s of subjects) assert.ok(Object.is(deliveryCountOf(s), parseAckSubject(s)?.deliveryCount ?? 1), s);
});
