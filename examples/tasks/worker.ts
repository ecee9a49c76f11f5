/**
 * The example task implementations. `celerity worker -A examples/tasks/worker.ts` loads this
 * module; the demo registers it in-process.
 */
import type { Worker } from "../../sdk/worker/mod.ts";
import { add, double, thumbnail, total } from "./signatures.ts";

/** What a handler throws for an image the store does not have; callers see it as the remote type. */
class ImageNotFoundError extends Error {
  override name = "ImageNotFoundError";
}

/** Registers the example handlers on `worker`. */
export default function register(worker: Worker): void {
  worker.implement(add, ({ a, b }) => a + b);
  worker.implement(double, (n) => n * 2);
  worker.implement(total, (xs) => xs.reduce((sum, x) => sum + x, 0));
  worker.implement(thumbnail, async ({ imageId, width }, ctx) => {
    if (imageId.startsWith("missing")) throw new ImageNotFoundError(`image ${imageId} is not in the store`);
    // Stand-in for real work: a few milliseconds per step, with progress for watchers.
    for (let step = 1; step <= 2; step++) {
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 10));
      ctx.progress({ step, of: 2 });
    }
    return { imageId, width, bytes: Math.round(width * width * 0.12) };
  });
}
