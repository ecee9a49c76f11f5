/**
 * The HPC callback: the smallest way to tell Celerity how a batch job ended. A job script reports
 * SUCCESS (with a JSON result), FAILURE or progress under a task id, or sends the next task, and
 * exits once the server has acknowledged it. `scripts/bundle-callback.mjs` turns it into one file,
 * `respond.cjs`, that runs with plain `node` and no node_modules (docs/hpc-callback.md).
 *
 * @example
 * ```ts
 * import { report } from "celerity/callback";
 * // What `node respond.cjs success --id "$CELERITY_TASK_ID" --result-file out.json` does:
 * await report({ kind: "success", id: "job-42", result: { rows: 1200 } }, { deadlineMs: 120_000 });
 * await report({ kind: "send", task: "images.index", args: { batch: 42 } });
 * ```
 * @module
 */
export {
  DEFAULT_DEADLINE_MS,
  DeliveryError,
  EXTERNAL_TASK,
  report,
  ReportError,
  type Report,
  type ReportOptions,
  type ReportOutcome,
} from "./report.ts";
export {
  CALLBACK_EXIT,
  callbackUsage,
  CallbackUsageError,
  main,
  parseCallbackArgs,
  parseDuration,
  type CallbackIo,
  type CallbackMainOptions,
} from "./cli.ts";
