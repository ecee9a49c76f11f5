/**
 * The example contracts: what a notebook, a script or the HPC callback imports to send work.
 * Plain data and valibot schemas; no worker code.
 */
import * as v from "valibot";
import { signature } from "../../sdk/signatures/mod.ts";

/**
 * Render a thumbnail of a stored image (simulated: it sleeps a little and reports progress).
 * Images whose id starts with `missing` are not in the store: the task fails with ImageNotFoundError.
 */
export const thumbnail = signature("images.thumbnail", {
  args: v.object({
    imageId: v.pipe(v.string(), v.minLength(1)),
    width: v.pipe(v.number(), v.integer(), v.minValue(16), v.maxValue(4096)),
  }),
  result: v.object({ imageId: v.string(), width: v.number(), bytes: v.number() }),
  queue: "images",
});

/** Add two numbers: the smallest useful task. */
export const add = signature("math.add", {
  args: v.object({ a: v.number(), b: v.number() }),
  result: v.number(),
});

/** Double a number. Its arguments are one number, so a chain step can take the previous result. */
export const double = signature("math.double", {
  args: v.number(),
  result: v.number(),
});

/** Sum a list of numbers: the body of a chord, which receives its members' results. */
export const total = signature("math.total", {
  args: v.array(v.number()),
  result: v.number(),
});
