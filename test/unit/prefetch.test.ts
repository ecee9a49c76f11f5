/** The prefetch window of a queue (sdk/worker/prefetch.ts): fixed when set, adaptive otherwise. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ADAPTIVE_PREFETCH_FACTOR, LONG_WAIT_MS, PIN_AFTER_HAND_BACK_MS, PrefetchWindow, WAIT_BUDGET_MS } from "../../sdk/worker/prefetch.ts";

const T = 1_000_000; // a clock reading; only differences matter

test("prefetch - a prefetch the user set never moves", () => {
  const w = new PrefetchWindow(50, 8);
  assert.equal(w.adaptive, false);
  assert.equal(w.limit, 8);
  assert.equal(w.max, 8);
  for (let i = 0; i < 100; i++) assert.equal(w.observe(0, 0, T), false);
  assert.equal(w.tooLong(60_000, T), false);
  assert.equal(w.idle(), false);
  assert.equal(w.limit, 8);
});

test("prefetch - an adaptive window starts at the concurrency and grows to 4x while slots turn over quickly", () => {
  const w = new PrefetchWindow(50, undefined);
  assert.equal(w.adaptive, true);
  assert.equal(w.limit, 50, "nothing observed yet: no more than the concurrency");
  assert.equal(w.max, 50 * ADAPTIVE_PREFETCH_FACTOR);
  assert.equal(w.observe(0, 0, T), true);
  assert.equal(w.limit, 200);
  assert.equal(w.observe(0, 3, T), false, "unchanged limit: nothing to tell the puller");
});

test("prefetch - the extra messages are sized so that each waits about the budget for a slot", () => {
  const w = new PrefetchWindow(10, undefined);
  // A steady 2 ms per slot: extra per slot = 5 / 2 = 2.5 -> 10 + 25.
  for (let i = 0; i < 50; i++) w.observe(2, 0, T);
  assert.equal(w.limit, 10 + Math.floor(10 * (WAIT_BUDGET_MS / 2)));
  // 100 ms per slot: 0.05 extra per slot, nothing at concurrency 10.
  for (let i = 0; i < 80; i++) w.observe(100, 0, T);
  assert.equal(w.limit, 10);
  // Never below the concurrency, however long the slots are held.
  for (let i = 0; i < 20; i++) w.observe(3_600_000, 0, T);
  assert.equal(w.limit, 10);
});

test("prefetch - one long slot pulls the window down quickly; short ones raise it again", () => {
  const w = new PrefetchWindow(4, undefined);
  for (let i = 0; i < 20; i++) w.observe(0, 0, T);
  assert.equal(w.limit, 16);
  w.observe(500, 0, T); // average 100 ms after one sample of 500 (smoothing 0.2)
  assert.equal(w.limit, 4);
  let steps = 0;
  while (w.limit < 16 && steps < 100) {
    w.observe(0, 0, T);
    steps++;
  }
  assert.equal(w.limit, 16);
  assert.ok(steps > 5 && steps < 40, `recovered in ${steps} short slots`);
});

test("prefetch - long waits for a slot (slots busy with other queues) keep the window down, however short the tasks", () => {
  const w = new PrefetchWindow(50, undefined);
  w.observe(0, 0, T);
  assert.equal(w.limit, 200);
  for (let i = 0; i < 10; i++) w.observe(0, 400, T);
  assert.equal(w.limit, 50, "tasks of 0 ms that each waited 400 ms for a slot");
  // Waits up to LONG_WAIT_MS are the window doing its job (messages queued behind their own queue).
  const v = new PrefetchWindow(50, undefined);
  for (let i = 0; i < 10; i++) v.observe(0, LONG_WAIT_MS, T);
  assert.equal(v.limit, 200);
});

test("prefetch - after a hand-back the window stays at the concurrency for a while", () => {
  const w = new PrefetchWindow(2, undefined);
  w.observe(0, 0, T);
  assert.equal(w.limit, 8);
  assert.equal(w.tooLong(1500, T), true);
  assert.equal(w.limit, 2);
  for (let i = 0; i < 100; i++) w.observe(0, 0, T + 1000);
  assert.equal(w.limit, 2, "pinned: short slots do not raise it yet");
  w.observe(0, 0, T + PIN_AFTER_HAND_BACK_MS + 1);
  assert.equal(w.limit, 8, "after the pin, the short slots seen meanwhile count");
});

test("prefetch - an idle queue falls back to the concurrency; the next short task raises it at once", () => {
  const w = new PrefetchWindow(3, undefined);
  w.observe(0, 0, T);
  assert.equal(w.limit, 12);
  assert.equal(w.idle(), true);
  assert.equal(w.limit, 3);
  assert.equal(w.idle(), false);
  w.observe(0, 0, T);
  assert.equal(w.limit, 12);
});

test("prefetch - a concurrency of 1 adapts too (1 to 4)", () => {
  const w = new PrefetchWindow(1, undefined);
  w.observe(0, 0, T);
  assert.equal(w.limit, 4);
  for (let i = 0; i < 30; i++) w.observe(10, 0, T);
  assert.equal(w.limit, 1);
});
