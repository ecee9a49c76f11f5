/** `celerity events` lines: what each event type shows, including values left out of events. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatEvent } from "../../sdk/cli/events.ts";
import { EVENT, type TaskEvent } from "../../sdk/protocol/mod.ts";

const at = Date.UTC(2026, 10, 23, 12, 0, 0);
const base = { id: "t1", task: "images.resize", queue: "images", at, worker: "w1" };

test("cli events - a line shows time, type, task, id, queue, worker and the value", () => {
  const line = formatEvent({ ...base, type: EVENT.succeeded, result: { ok: true }, runtimeMs: 12 } as TaskEvent);
  assert.equal(line, `2026-11-23T12:00:00.000Z  task-succeeded      images.resize  t1  images  w1  12 ms → {"ok":true}`);
});

test("cli events - a value left out of its event (too large) is named with its size", () => {
  const done = formatEvent({ ...base, type: EVENT.succeeded, omitted: { result: 900005 }, runtimeMs: 3 } as TaskEvent);
  assert.match(done, /3 ms → \(900005 bytes, not carried by events\)$/);
  const sent = formatEvent({ ...base, type: EVENT.sent, omitted: { args: 2048000 } } as TaskEvent);
  assert.match(sent, /args \(2048000 bytes, not carried by events\)$/);
  const progress = formatEvent({ ...base, type: EVENT.progress, omitted: { progress: 700000 } } as TaskEvent);
  assert.match(progress, /progress \(700000 bytes, not carried by events\)$/);
});
