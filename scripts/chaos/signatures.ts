/** The one task the chaos suite runs: plain data, shared by the sender and the worker processes. */
import * as v from "valibot";
import { signature } from "../../sdk/signatures/mod.ts";

/**
 * Records its execution (worker side), sleeps `sleepMs`, returns `n` and the worker's pid.
 * `pad` lets a raw sender make a valid task as large as it likes.
 */
export const work = signature("chaos.work", {
  args: v.object({
    n: v.number(),
    sleepMs: v.optional(v.number()),
    pad: v.optional(v.string()),
  }),
  result: v.object({ n: v.number(), pid: v.number() }),
});
