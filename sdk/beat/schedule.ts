/**
 * Periodic schedules: declared in code or loaded from plain data (a YAML or JSON file), checked
 * once, and turned into tick times. A tick's time is deterministic (epoch-aligned intervals, cron
 * times in a zone), so every beat replica computes the same ticks and the same task ids.
 */
import * as v from "valibot";
import { assertTaskName, ProtocolError } from "../protocol/mod.ts";
import { checkTaskOptions, isSignature, type AnySignature, type TaskOptions } from "../signatures/mod.ts";
import { cronTimesBetween, isTimeZone, nextCronTime, parseCron, type CronExpression } from "./cron.ts";

/** What a restarted (or newly elected) beat does with ticks it missed. */
export const CATCH_UP = {
  /** Missed ticks are dropped; only ticks on time fire. */
  skip: "skip",
  /** One run for the whole gap (the latest missed tick), unless a tick on time fires anyway. Celery's behaviour. */
  once: "once",
  /** Every missed tick fires, oldest first, each with its own task id. */
  all: "all",
} as const;
/** One catch-up policy. */
export type CatchUp = (typeof CATCH_UP)[keyof typeof CATCH_UP];

/** Task options a schedule may set for the tasks it sends (the send-time options that make sense for a tick). */
export interface ScheduleTaskOptions extends TaskOptions {
  /** Plain data carried with every task this schedule sends. */
  meta?: Record<string, unknown>;
}

/** One periodic task, as declared in code. */
export interface ScheduleEntry {
  /** Unique name: the key of its last run and part of every tick's task id (`beat.<name>.<tickMs>`). */
  name: string;
  /** The task to send: a signature (arguments checked against its schema) or a task name. */
  task: AnySignature | string;
  /** Arguments of every run. */
  args?: unknown;
  /** A five-field cron expression (or @hourly, @daily, …), evaluated in `timezone`. */
  cron?: string;
  /** An interval in seconds; ticks are aligned to the Unix epoch (every: 3600 fires on the hour, UTC). */
  every?: number;
  /** IANA time zone of `cron` (default: the `timezone` setting). */
  timezone?: string;
  /** Options of the tasks sent (queue, priority, expires, retries, meta, …). */
  options?: ScheduleTaskOptions;
  /** What to do with ticks missed while no beat ran (default `once`). */
  catchUp?: CatchUp;
}

/** A checked schedule, ready to compute ticks. */
export interface Schedule {
  readonly name: string;
  readonly task: AnySignature | string;
  readonly taskName: string;
  readonly args: unknown;
  readonly options: ScheduleTaskOptions;
  readonly catchUp: CatchUp;
  /** Present for cron schedules. */
  readonly cron?: CronExpression;
  readonly timezone: string;
  /** Present for interval schedules, in milliseconds. */
  readonly everyMs?: number;
  /** `cron "<expr>" (<zone>)` or `every <n> s`, for logs and status. */
  readonly describe: string;
}

/** A schedule declaration that cannot be used; the message names the schedule and the field. */
export class BeatScheduleError extends ProtocolError {
  override name = "BeatScheduleError";
}

/** Schedule names: dot-separated segments of letters, digits, _ and -, short enough for a task id. */
const SCHEDULE_NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const MAX_NAME = 100;

/** The task id of the tick of `schedule` at `tickMs`: the Nats-Msg-Id that makes a tick fire once. */
export function tickId(schedule: string, tickMs: number): string {
  return `beat.${schedule}.${tickMs}`;
}

/** Checks a declaration and prepares it (throws {@link BeatScheduleError}). */
export function checkSchedule(entry: ScheduleEntry, defaultTimezone = "UTC"): Schedule {
  const where = `beat schedule ${JSON.stringify(entry?.name)}`;
  if (typeof entry !== "object" || entry === null) throw new BeatScheduleError(`a beat schedule must be an object, not ${entry === null ? "null" : typeof entry}`);
  if (typeof entry.name !== "string" || !SCHEDULE_NAME.test(entry.name) || entry.name.length > MAX_NAME) {
    throw new BeatScheduleError(`${where}: the name must be up to ${MAX_NAME} letters, digits, _ and -, in dot-separated segments`);
  }
  const taskName = isSignature(entry.task) ? entry.task.name : entry.task;
  try {
    assertTaskName(taskName);
  } catch (err) {
    throw new BeatScheduleError(`${where}: ${(err as Error).message}`);
  }
  if ((entry.cron === undefined) === (entry.every === undefined)) {
    throw new BeatScheduleError(`${where}: set exactly one of "cron" or "every"`);
  }
  const timezone = entry.timezone ?? defaultTimezone;
  if (!isTimeZone(timezone)) throw new BeatScheduleError(`${where}: timezone ${JSON.stringify(timezone)} is not an IANA time zone such as "UTC" or "Europe/Paris"`);
  const catchUp = entry.catchUp ?? CATCH_UP.once;
  if (!Object.values(CATCH_UP).includes(catchUp)) throw new BeatScheduleError(`${where}: catchUp must be "skip", "once" or "all", not ${JSON.stringify(catchUp)}`);
  const { meta, ...taskOptions } = entry.options ?? {};
  try {
    checkTaskOptions(taskOptions as Record<string, unknown>, where);
  } catch (err) {
    throw new BeatScheduleError((err as Error).message);
  }
  if (meta !== undefined && (typeof meta !== "object" || meta === null || Array.isArray(meta))) {
    throw new BeatScheduleError(`${where}: options.meta must be an object`);
  }
  const base = { name: entry.name, task: entry.task, taskName, args: entry.args, options: entry.options ?? {}, catchUp, timezone };
  if (entry.cron !== undefined) {
    let cron: CronExpression;
    try {
      cron = parseCron(entry.cron);
    } catch (err) {
      throw new BeatScheduleError(`${where}: ${(err as Error).message}`);
    }
    if (nextCronTime(cron, Date.UTC(2000, 0, 1), timezone) === undefined) {
      throw new BeatScheduleError(`${where}: cron "${cron.source}" never fires (no date matches it)`);
    }
    return { ...base, cron, describe: `cron "${cron.source}" (${timezone})` };
  }
  const every = entry.every!;
  if (typeof every !== "number" || !Number.isFinite(every) || every <= 0) {
    throw new BeatScheduleError(`${where}: every must be a positive number of seconds, not ${JSON.stringify(every)}`);
  }
  const everyMs = Math.max(1, Math.round(every * 1000));
  return { ...base, everyMs, describe: `every ${every} s` };
}

/** The first tick of `s` strictly after `afterMs`, or undefined if there is none. */
export function nextTick(s: Schedule, afterMs: number): number | undefined {
  if (s.everyMs !== undefined) return (Math.floor(afterMs / s.everyMs) + 1) * s.everyMs;
  return nextCronTime(s.cron!, afterMs, s.timezone);
}

/** Ticks of `s` in (`fromMs`, `toMs`], ascending, at most `limit`. */
export function ticksBetween(s: Schedule, fromMs: number, toMs: number, limit = Infinity): number[] {
  if (s.everyMs === undefined) return cronTimesBetween(s.cron!, fromMs, toMs, s.timezone, limit);
  const out: number[] = [];
  for (let t = nextTick(s, fromMs)!; t <= toMs && out.length < limit; t += s.everyMs) out.push(t);
  return out;
}

/** The latest tick of `s` in (`notBeforeMs`, `beforeMs`), found by widening windows backwards. */
export function lastTickBefore(s: Schedule, beforeMs: number, notBeforeMs: number): number | undefined {
  if (s.everyMs !== undefined) {
    const t = Math.ceil(beforeMs / s.everyMs) * s.everyMs - s.everyMs;
    return t > notBeforeMs ? t : undefined;
  }
  for (let window = 3_600_000; ; window *= 8) {
    const from = Math.max(notBeforeMs, beforeMs - window);
    let last: number | undefined;
    for (let t = nextTick(s, from); t !== undefined && t < beforeMs; t = nextTick(s, t)) last = t;
    if (last !== undefined || from === notBeforeMs) return last;
  }
}

// ---- plain data (a YAML or JSON file) ---------------------------------------------------------

const nonNegative = (what: string) => v.pipe(v.number(`${what} must be a number`), v.finite(), v.minValue(0, `${what} must be >= 0`));

/** Task options a schedule file may set. */
const scheduleOptionsSchema = v.strictObject({
  queue: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_-]+$/, "queue must be letters, digits, _ and -"))),
  priority: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(9, "priority must be 0 to 9"))),
  retries: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
  retryDelay: v.optional(nonNegative("retryDelay")),
  retryDelayMax: v.optional(nonNegative("retryDelayMax")),
  softTimeLimit: v.optional(nonNegative("softTimeLimit")),
  timeLimit: v.optional(nonNegative("timeLimit")),
  expires: v.optional(nonNegative("expires")),
  autoretryFor: v.optional(v.array(v.pipe(v.string(), v.minLength(1)))),
  meta: v.optional(v.record(v.string(), v.unknown())),
});

function cronProblem(expression: string): string | undefined {
  try {
    parseCron(expression);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * One schedule as plain data, the shape of an entry of a YAML `schedules:` list:
 * `{ name, task, args?, cron? | every?, timezone?, options?, catchUp? }` (task by name).
 */
export const beatScheduleSchema = v.pipe(
  v.strictObject({
    name: v.pipe(
      v.string("name must be a string"),
      v.regex(SCHEDULE_NAME, "name must be letters, digits, _ and -, in dot-separated segments"),
      v.maxLength(MAX_NAME, `name must be at most ${MAX_NAME} characters`),
    ),
    task: v.pipe(v.string("task must be a task name"), v.regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, "task must be a task name such as reports.daily")),
    args: v.optional(v.unknown()),
    cron: v.optional(v.pipe(v.string("cron must be a string"), v.check((s) => cronProblem(s) === undefined, (issue) => cronProblem(issue.input as string) ?? "invalid cron expression"))),
    every: v.optional(v.pipe(v.number("every must be a number of seconds"), v.finite(), v.gtValue(0, "every must be > 0"))),
    timezone: v.optional(v.pipe(v.string(), v.check(isTimeZone, (issue) => `timezone ${JSON.stringify(issue.input)} is not an IANA time zone such as "UTC" or "Europe/Paris"`))),
    options: v.optional(scheduleOptionsSchema),
    catchUp: v.optional(v.picklist(Object.values(CATCH_UP), 'catchUp must be "skip", "once" or "all"')),
  }),
  v.check((s) => (s.cron === undefined) !== (s.every === undefined), 'set exactly one of "cron" or "every"'),
);

/** A list of schedules as plain data. */
export const beatSchedulesSchema = v.array(beatScheduleSchema);

/** One schedule as plain data (the output of {@link beatScheduleSchema}). */
export type BeatScheduleData = v.InferOutput<typeof beatScheduleSchema>;

/**
 * Schedules from plain data: a list, or an object with a `schedules` list (a parsed YAML or JSON
 * file). Throws {@link BeatScheduleError} listing every problem with its path.
 */
export function loadSchedules(data: unknown): ScheduleEntry[] {
  const list = typeof data === "object" && data !== null && !Array.isArray(data) && "schedules" in data
    ? (data as { schedules: unknown }).schedules
    : data;
  const result = v.safeParse(beatSchedulesSchema, list);
  if (!result.success) {
    const problems = result.issues.map((issue) => {
      const path = (issue.path ?? []).map((p) => (typeof p.key === "number" ? `[${p.key}]` : `.${String(p.key)}`)).join("");
      return `schedules${path}: ${issue.message}`;
    });
    throw new BeatScheduleError(`invalid beat schedules:\n  ${problems.join("\n  ")}`);
  }
  const seen = new Set<string>();
  for (const s of result.output) {
    if (seen.has(s.name)) throw new BeatScheduleError(`invalid beat schedules: the name ${JSON.stringify(s.name)} is used twice`);
    seen.add(s.name);
  }
  return result.output.map((s) => ({ ...s }) as ScheduleEntry);
}
