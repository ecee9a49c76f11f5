/**
 * The Celerity client: send typed signatures, call and wait, read results, follow progress.
 * Imports no worker code: notebooks, one-off scripts and the HPC callback stay small.
 *
 * @example
 * ```ts
 * import { connect, signature } from "celerity";
 * import * as v from "valibot";
 * const add = signature("math.add", { args: v.object({ a: v.number(), b: v.number() }), result: v.number() });
 * await using client = await connect();
 * const sum = await client.call(add, { a: 1, b: 2 }); // 3, typed as number
 * ```
 * @module
 */
export { Client, connect, idempotentId, type CallOptions, type ConnectOptions, type RevokeOptions, type SendOptions } from "./client.ts";
export { recordOutcome, TaskHandle, type ResultOptions, type TaskStatus } from "./handle.ts";
export { AckedPublisher, type PubAck, type PublisherOptions } from "./publisher.ts";
export { EventBuffer } from "./events.ts";
export { clockSlackMs, isCasConflict, openBucket } from "./kv.ts";
export { Router, UnknownQueueError, type Route, type RouteFunction, type RouteSource } from "./routing.ts";
export { CONTROL_VERBS, INSPECT_VERBS, type ControlOptions, type ControlVerb, type InspectVerb } from "./control.ts";
export { DeadLetters, type DeadLetter, type DeadLetterFilter } from "./dead_letters.ts";
export { createLogger, LOG_LEVEL, type Logger, type LogLevel } from "./logger.ts";
export { ensureTopology, ensureStreams, isNotFound, streamConfigs, WORKER_LEASE_S, type TopologyOptions } from "./topology.ts";
export * from "../signatures/mod.ts";
export {
  CelerityError,
  ConnectionClosedError,
  InvalidArgumentsError,
  InvalidResultError,
  NonRetryableError,
  PayloadTooLargeError,
  PublishError,
  RemoteTaskError,
  ResultTimeoutError,
  TaskRevokedError,
  STATE,
  EVENT,
  type ControlDestination,
  type ControlReply,
  type ErrorShape,
  type WorkerEntry,
  type ResultRecord,
  type TaskEvent,
  type TaskState,
} from "../protocol/mod.ts";
export type { Settings, SettingsInput } from "../settings/mod.ts";
