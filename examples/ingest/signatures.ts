/** The ingest example's contract: shared by the uploading script and the worker. */
import * as v from "valibot";
import { signature } from "../../sdk/signatures/mod.ts";
import { objectRefSchema } from "../../sdk/ingest/mod.ts";

/** Counts the lines of an uploaded text input. */
export const countLines = signature("ingest.count_lines", {
  args: v.object({ ref: objectRefSchema }),
  result: v.object({ lines: v.number(), bytes: v.number() }),
  queue: "ingest",
  timeLimit: 300,
});
