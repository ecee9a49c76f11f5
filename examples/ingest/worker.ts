/** The worker side: reads the referenced object as a stream (digest checked) and counts its lines. */
import type { Worker } from "../../sdk/worker/mod.ts";
import { openObject } from "../../sdk/ingest/mod.ts";
import { countLines } from "./signatures.ts";

export default function register(worker: Worker): void {
  worker.implement(countLines, async ({ ref }, ctx) => {
    let lines = 0;
    let bytes = 0;
    let last = 10;
    const reader = (await openObject(ctx.client, ref)).getReader();
    for (;;) {
      const { done, value: chunk } = await reader.read();
      if (done) break;
      for (const byte of chunk) if (byte === 10) lines++;
      bytes += chunk.length;
      if (chunk.length) last = chunk[chunk.length - 1]!;
    }
    // A last line without a newline still counts.
    if (bytes > 0 && last !== 10) lines++;
    return { lines, bytes };
  });
}
