/**
 * The beat's logger: the same shape as the worker's (so a worker's logger can be passed in), with a
 * small default that writes one line per call to stderr.
 */

/** Log levels, lowest first. */
export const BEAT_LOG_LEVEL = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
/** One log level name. */
export type BeatLogLevel = keyof typeof BEAT_LOG_LEVEL;

/** What the beat logs through (a worker's `Logger` fits). */
export interface BeatLogger {
  debug(message: string, data?: Record<string, unknown>): void;
  info(message: string, data?: Record<string, unknown>): void;
  warn(message: string, data?: Record<string, unknown>): void;
  error(message: string, data?: Record<string, unknown>): void;
}

/** Logs `time LEVEL message {fields}` to `write` (default: console.error) at `level` and above. */
export function createBeatLogger(
  level: BeatLogLevel = "info",
  fields: Record<string, unknown> = {},
  write: (line: string) => void = (line) => console.error(line),
): BeatLogger {
  const min = BEAT_LOG_LEVEL[level];
  const emit = (lvl: Exclude<BeatLogLevel, "silent">, message: string, data?: Record<string, unknown>) => {
    if (BEAT_LOG_LEVEL[lvl] < min) return;
    const extra = { ...fields, ...data };
    let tail = "";
    try {
      tail = Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : "";
    } catch {
      tail = " {…}";
    }
    write(`${new Date().toISOString()} ${lvl.toUpperCase()} ${message}${tail}`);
  };
  return {
    debug: (m, d) => emit("debug", m, d),
    info: (m, d) => emit("info", m, d),
    warn: (m, d) => emit("warn", m, d),
    error: (m, d) => emit("error", m, d),
  };
}
