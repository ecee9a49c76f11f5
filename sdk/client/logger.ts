/**
 * A small leveled logger: workers, handlers and the beat log through it, so output can go to a
 * file (`write`). Here, below both, so the worker and the beat share one.
 */

/** Log levels, lowest first. */
export const LOG_LEVEL = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const;
/** One log level name. */
export type LogLevel = keyof typeof LOG_LEVEL;

/** What handlers get as `ctx.log`. */
export interface Logger {
  debug(message: string, data?: Record<string, unknown>): void;
  info(message: string, data?: Record<string, unknown>): void;
  warn(message: string, data?: Record<string, unknown>): void;
  error(message: string, data?: Record<string, unknown>): void;
  /** A logger that adds `fields` to every line. */
  child(fields: Record<string, unknown>): Logger;
}

/** Logs one line per call: `time level message {fields}` to `write` (default: console.error). */
export function createLogger(
  level: LogLevel = "info",
  fields: Record<string, unknown> = {},
  write: (line: string) => void = (line) => console.error(line),
): Logger {
  const min = LOG_LEVEL[level];
  const emit = (lvl: Exclude<LogLevel, "silent">, message: string, data?: Record<string, unknown>) => {
    if (LOG_LEVEL[lvl] < min) return;
    const extra = { ...fields, ...data };
    const tail = Object.keys(extra).length ? ` ${safeJson(extra)}` : "";
    write(`${new Date().toISOString()} ${lvl.toUpperCase()} ${message}${tail}`);
  };
  return {
    debug: (m, d) => emit("debug", m, d),
    info: (m, d) => emit("info", m, d),
    warn: (m, d) => emit("warn", m, d),
    error: (m, d) => emit("error", m, d),
    child: (more) => createLogger(level, { ...fields, ...more }, write),
  };
}

/** Fields as JSON; BigInts as strings; anything else JSON refuses (a cycle) as `{…}`. */
function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? v.toString() : v));
  } catch {
    return "{…}";
  }
}
