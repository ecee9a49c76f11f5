/**
 * The beat logs through the same small logger as workers (sdk/client/logger.ts), so a worker's
 * logger can be passed in. These names are the beat's public ones for it.
 */
import { createLogger, LOG_LEVEL, type Logger, type LogLevel } from "../client/mod.ts";

/** Log levels, lowest first. */
export const BEAT_LOG_LEVEL = LOG_LEVEL;
/** One log level name. */
export type BeatLogLevel = LogLevel;
/** What the beat logs through (a worker's `Logger` fits; `child` is not needed). */
export type BeatLogger = Pick<Logger, "debug" | "info" | "warn" | "error">;
/** Logs `time LEVEL message {fields}` to `write` (default: console.error) at `level` and above. */
export const createBeatLogger: (level?: BeatLogLevel, fields?: Record<string, unknown>, write?: (line: string) => void) => BeatLogger = createLogger;
