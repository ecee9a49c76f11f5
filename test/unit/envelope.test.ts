/** The readers of sdk/protocol: what they accept, and what they refuse with which error. */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  decodeEventBatch,
  decodeReply,
  decodeResultRecord,
  decodeRevocation,
  decodeTaskMessage,
  encode,
  ProtocolError,
  PROTOCOL_VERSION,
  UnsupportedVersionError,
} from "../../sdk/protocol/mod.ts";

const record = { kind: "result", v: PROTOCOL_VERSION, id: "t1", task: "x", state: "SUCCESS", result: 1 };
const batch = { v: PROTOCOL_VERSION, events: [{ type: "task-sent", id: "t1", task: "x", at: 1 }] };
const revocation = { v: PROTOCOL_VERSION, id: "t1", at: 1, terminate: false, reason: "r" };
const task = { v: PROTOCOL_VERSION, id: "t1", task: "x", queue: "q", sentAt: 1, args: {} };

const readers = [
  ["result record", decodeResultRecord, record],
  ["reply", decodeReply, record],
  ["event batch", decodeEventBatch, batch],
  ["revocation", decodeRevocation, revocation],
  ["task message", decodeTaskMessage, task],
] as const;

test("envelope - every reader refuses a newer protocol version with UnsupportedVersionError", () => {
  for (const [what, read, value] of readers) {
    assert.doesNotThrow(() => read(encode(value)), `${what}: version ${PROTOCOL_VERSION}`);
    assert.throws(
      () => read(encode({ ...value, v: PROTOCOL_VERSION + 1 })),
      (err: Error) => err instanceof UnsupportedVersionError && err instanceof ProtocolError && new RegExp(`version ${PROTOCOL_VERSION + 1}`).test(err.message),
      `${what}: version ${PROTOCOL_VERSION + 1}`,
    );
  }
});

test("envelope - results, replies, events and revocations without `v` are read as version 1", () => {
  for (const [what, read, value] of readers.slice(0, 4)) {
    const { v: _v, ...unversioned } = value;
    assert.doesNotThrow(() => read(encode(unversioned)), what);
  }
  // A task message must say its version: the worker dead-letters one that does not.
  const { v: _v, ...unversioned } = task;
  assert.throws(() => decodeTaskMessage(encode(unversioned)), /no protocol version/);
});

test("envelope - readers refuse what is not their envelope with ProtocolError", () => {
  assert.throws(() => decodeResultRecord(encode({ id: "t1" })), ProtocolError);
  assert.throws(() => decodeReply(encode([1])), ProtocolError);
  assert.throws(() => decodeEventBatch(encode({ v: 1 })), ProtocolError);
  assert.throws(() => decodeRevocation(encode("t1")), ProtocolError);
  assert.throws(() => decodeResultRecord(new Uint8Array([0xc1])), ProtocolError);
});
