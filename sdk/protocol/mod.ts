/**
 * The wire contract of Celerity: names, headers, envelopes and error shapes. Pure: no sockets and
 * no runtime APIs, so every other piece (and another language's client) can follow it.
 *
 * @example
 * ```ts
 * import { names, encode } from "celerity/protocol";
 * const n = names("celerity");
 * n.taskSubject("images", 0); // "celerity.tasks.images.0"
 * ```
 * @module
 */
export * from "./names.ts";
export * from "./errors.ts";
export * from "./envelope.ts";
export * from "./ack.ts";
export * from "./writer.ts";
