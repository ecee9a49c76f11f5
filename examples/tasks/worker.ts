/**
 * The example task implementations. `celerity worker -A examples/tasks/worker.ts` loads this
 * module; the demo registers it in-process.
 */
import type { Worker } from "../../sdk/worker/mod.ts";
import { add, thumbnail } from "./signatures.ts";

/** Registers the example handlers on `worker`. */
export default function register(worker: Worker): void {
  worker.implement(add, ({ a, b }) => a + b);
  worker.implement(thumbnail, async ({ imageId, width }, ctx) => {
    // Stand-in for real work: a few milliseconds per step, with progress for watchers.
    for (let step = 1; step <= 2; step++) {
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 10));
      ctx.progress({ step, of: 2 });
    }
    return { imageId, width, bytes: Math.round(width * width * 0.12) };
  });
}
