/**
 * The Blue Sky pattern as a Celerity workflow: objects (imaging "specimens") move through
 * workflow queues. `ingest` splits a specimen into its tiles (one downstream job per tile),
 * `process` runs per tile, `record` gathers every tile of a specimen (a group by root object) and
 * records its finished state, and `publish` enqueues the specimen in the next queue (a batch of
 * all specimens). A tile that fails its processing leaves the specimen's ingest succeeded.
 */
import * as v from "valibot";
import { signature } from "../../sdk/client/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";
import { defineWorkflow, registerWorkflowTasks } from "../../sdk/workflow/mod.ts";

const Specimen = v.object({ id: v.string(), tiles: v.number() });
const Tile = v.object({ specimen: v.string(), tile: v.number() });
const Processed = v.object({ specimen: v.string(), tile: v.number(), cells: v.number() });
const Finished = v.object({ specimen: v.string(), tiles: v.number(), cells: v.number() });

export const ingest = signature("bluesky.ingest", { args: Specimen, result: v.array(Tile) });
export const processTile = signature("bluesky.process", { args: Tile, result: Processed });
export const record = signature("bluesky.record", { args: v.array(Processed), result: Finished });
export const publish = signature("bluesky.publish", { args: v.array(Finished), result: v.object({ queue: v.string(), specimens: v.array(v.string()) }) });

export const bluesky = defineWorkflow({
  name: "bluesky.imaging",
  stages: {
    ingest: { task: ingest, next: ["process"], split: true },
    process: { task: processTile, next: ["record"] },
    record: { task: record, next: ["publish"], group: { by: "root" } },
    publish: { task: publish, group: { by: "workflow" } },
  },
});

/** Implements the stages (and the workflow's internal tasks) on `worker`. */
export function register(worker: Worker): Worker {
  worker
    .implement(ingest, ({ id, tiles }) => Array.from({ length: tiles }, (_, tile) => ({ specimen: id, tile })))
    .implement(processTile, async ({ specimen, tile }) => {
      await new Promise((r) => setTimeout(r, 10));
      return { specimen, tile, cells: (specimen.length * 7 + tile * 3) % 11 };
    })
    .implement(record, (tiles) => ({ specimen: tiles[0]!.specimen, tiles: tiles.length, cells: tiles.reduce((t, x) => t + x.cells, 0) }))
    .implement(publish, (finished) => ({ queue: "qc", specimens: finished.map((f) => f.specimen).sort() }));
  return registerWorkflowTasks(worker, { workflows: [bluesky] });
}
