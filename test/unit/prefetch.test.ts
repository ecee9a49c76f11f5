/** The prefetch window of a queue (sdk/worker/prefetch.ts): fixed when set, adaptive otherwise. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ADAPTIVE_PREFETCH_FACTOR, PrefetchWindow, WAIT_BUDGET_MS } from "../../sdk/worker/prefetch.ts";

test("prefetch - a prefetch the user set never moves", () => {
  const w = new PrefetchWindow(50, 8);
  assert.equal(w.adaptive, false);
  assert.equal(w.limit, 8);
  assert.equal(w.max, 8);
  for (let i = 0; i < 100; i++) assert.equal(w.observe(0), false);
  assert.equal(w.tooLong(60_000), false);
  assert.equal(w.limit, 8);
});

test("prefetch - an adaptive window starts at the concurrency and grows to 4x while tasks are short", () => {
  const w = new PrefetchWindow(50, undefined);
  assert.equal(w.adaptive, true);
  assert.equal(w.limit, 50, "nothing observed yet: no more than the concurrency");
  assert.equal(w.max, 50 * ADAPTIVE_PREFETCH_FACTOR);
  assert.equal(w.observe(0), true);
  assert.equal(w.limit, 200);
  assert.equal(w.observe(0), false, "unchanged limit: nothing to tell the puller");
});

test("prefetch - the extra messages are sized so that each waits about the budget for a slot", () => {
  const w = new PrefetchWindow(10, undefined);
  // A steady 2 ms per task: extra per slot = 5 / 2 = 2.5 -> 10 + 25.
  for (let i = 0; i < 50; i++) w.observe(2);
  assert.equal(w.limit, 10 + Math.floor(10 * (WAIT_BUDGET_MS / 2)));
  // 100 ms per task: 0.05 extra per slot, nothing at concurrency 10.
  for (let i = 0; i < 80; i++) w.observe(100);
  assert.equal(w.limit, 10);
  // Never below the concurrency, however long the tasks.
  for (let i = 0; i < 20; i++) w.observe(3_600_000);
  assert.equal(w.limit, 10);
});

test("prefetch - one long run pulls the window down quickly; short runs raise it again", () => {
  const w = new PrefetchWindow(4, undefined);
  for (let i = 0; i < 20; i++) w.observe(0);
  assert.equal(w.limit, 16);
  w.observe(500); // average 100 ms after one sample of 500 (smoothing 0.2)
  assert.equal(w.limit, 4);
  let steps = 0;
  while (w.limit < 16 && steps < 100) {
    w.observe(0);
    steps++;
  }
  assert.equal(w.limit, 16);
  assert.ok(steps > 5 && steps < 40, `recovered in ${steps} short runs`);
});

test("prefetch - a message that waited too long for a slot drops the window to the concurrency", () => {
  const w = new PrefetchWindow(2, undefined);
  w.observe(0);
  assert.equal(w.limit, 8);
  assert.equal(w.tooLong(1500), true);
  assert.equal(w.limit, 2);
  assert.equal(w.observe(0), false, "one short run after a 1.5 s wait is not enough to grow again");
});

test("prefetch - a concurrency of 1 adapts too (1 to 4)", () => {
  const w = new PrefetchWindow(1, undefined);
  w.observe(0);
  assert.equal(w.limit, 4);
  for (let i = 0; i < 30; i++) w.observe(10);
  assert.equal(w.limit, 1);
});
