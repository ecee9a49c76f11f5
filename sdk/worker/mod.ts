/**
 * The Celerity worker runtime: implement signatures and consume their queues.
 *
 * @example
 * ```ts
 * import { Worker } from "celerity/worker";
 * import { add } from "./signatures.ts";
 * const worker = new Worker({ concurrency: 4 });
 * worker.implement(add, ({ a, b }) => a + b);
 * await worker.run(); // until SIGINT/SIGTERM
 * ```
 * @module
 */
export {
  MaxRetriesExceededError,
  NonRetryableError,
  RetryRequested,
  Worker,
  WorkerShutdownError,
  type Handler,
  type TaskContext,
  type WorkerOptions,
} from "./worker.ts";
export { SoftTimeLimitExceeded, TimeLimitExceeded, TaskTerminated } from "./pool/mod.ts";
export { ensurePriorityConsumers, PriorityConsumerConflictError, PriorityPuller, type PriorityPullerOptions } from "./priority_puller.ts";
export { QueuePuller, type PullerOptions } from "./puller.ts";
export { createLogger, LOG_LEVEL, type Logger, type LogLevel } from "../client/mod.ts";
export {
  ETERNAL_STATUS, eternalBucket, EternalRunner, eternalStatus,
  type EternalContext, type EternalOptions, type EternalState, type EternalStatus,
} from "./eternal.ts";
export {
  DispatchError, handler, HANDLER_TASK_PREFIX, HandlerRegistry, handlersBucket, listen, packetsSubject,
  publishPacket, requestPacket, unknownPackets,
  type DispatchReport, type HandlerContext, type HandlerOptions, type HandlerRegistration, type ImplementsTasks,
  type ListenOptions, type Packet, type PacketArgs, type PacketHandler, type PacketListener, type UnknownPacketCount,
} from "./handlers.ts";
