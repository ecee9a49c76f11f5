/** The results-table view of single events (sdk/monitor/timeline.ts viewOf), without a server. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { viewOf } from "../../sdk/monitor/timeline.ts";
import { EVENT, type TaskEvent } from "../../sdk/protocol/mod.ts";

test("timeline - a result or args left out of an event (too large) stays absent, not null", () => {
  const omittedResult = { type: EVENT.succeeded, id: "a", task: "t", at: 1, omitted: { result: 2_000_000 } } as unknown as TaskEvent;
  assert.equal("result" in viewOf(omittedResult), false, "its column must stay SQL NULL (docs/results-table.md)");
  const omittedArgs = { type: EVENT.sent, id: "a", task: "t", at: 1, omitted: { args: 2_000_000 } } as unknown as TaskEvent;
  assert.equal("args" in viewOf(omittedArgs), false);
  // Values that really were null are kept as null.
  assert.equal(viewOf({ type: EVENT.succeeded, id: "a", task: "t", at: 1, result: null } as unknown as TaskEvent).result, null);
  assert.ok("args" in viewOf({ type: EVENT.sent, id: "a", task: "t", at: 1, args: null } as unknown as TaskEvent));
});
