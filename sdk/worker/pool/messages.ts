/** Messages between a pool and its executors (structured clone / advanced IPC serialization). */
import type { ErrorShape } from "../../protocol/mod.ts";
import type { ExecutionOutcome, ExecutionRequest } from "./types.ts";

/** Pool → executor. */
export type ToExecutor =
  | { type: "init"; tasksModule: string; connect?: Record<string, unknown> }
  | { type: "run"; req: ExecutionRequest }
  | { type: "abort"; id: string; reason: { name: string; message: string } }
  | { type: "close" };

/** Executor → pool. */
export type FromExecutor =
  | { type: "ready"; tasks: string[]; pid: number; threadId: number }
  | { type: "init-error"; error: ErrorShape }
  | { type: "progress"; id: string; value: unknown }
  | { type: "log"; id: string; level: string; message: string; data?: Record<string, unknown> }
  /** `memory`: RSS (processes) or V8 heap used (threads), in bytes, measured after the task. */
  | { type: "done"; id: string; outcome: ExecutionOutcome; memory: number }
  /** An uncaught error is about to end the executor. */
  | { type: "fatal"; error: ErrorShape };
