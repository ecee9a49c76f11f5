/**
 * Five-field cron expressions (minute hour day-of-month month day-of-week) evaluated in an IANA
 * time zone with the platform's Intl data, so it runs unchanged on Node, Deno and Bun and needs no
 * dependency.
 *
 * Daylight-saving changes follow Vixie cron, the behaviour operators already know:
 * - an expression whose minute or hour field starts with `*` (every 15 minutes, `0 * * * *`)
 *   follows real time: it fires in both copies of a repeated hour and never inside a skipped one;
 * - any other expression names wall-clock times (`30 2 * * *`): a time that occurs twice fires once
 *   (the first time); a time that is skipped fires once, at the first instant after the gap.
 */

/** A cron expression that cannot be parsed; the message quotes the offending field. */
export class CronSyntaxError extends Error {
  override name = "CronSyntaxError";
}

/** A parsed cron expression: the allowed values of each field, sorted. */
export interface CronExpression {
  /** The expression as written. */
  readonly source: string;
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: readonly number[];
  /** 1 (January) … 12. */
  readonly months: readonly number[];
  /** 0 (Sunday) … 6; 7 is read as 0. */
  readonly daysOfWeek: readonly number[];
  /** The day-of-month field starts with `*` (then a day must match both day fields, else either). */
  readonly domStar: boolean;
  readonly dowStar: boolean;
  /** The minute or hour field starts with `*`: the expression follows real time across DST changes. */
  readonly followsRealTime: boolean;
}

const MACROS: Record<string, string> = {
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
  "@monthly": "0 0 1 * *",
  "@weekly": "0 0 * * 0",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@hourly": "0 * * * *",
};

const MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

interface FieldSpec {
  name: string;
  min: number;
  max: number;
  names?: string[];
  /** Value of names[0]. */
  nameBase?: number;
}

const FIELDS: FieldSpec[] = [
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day-of-month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: MONTH_NAMES, nameBase: 1 },
  { name: "day-of-week", min: 0, max: 7, names: DAY_NAMES, nameBase: 0 },
];

function parseValue(text: string, spec: FieldSpec, field: string): number {
  const upper = text.toUpperCase();
  const named = spec.names?.indexOf(upper) ?? -1;
  if (named >= 0) return named + spec.nameBase!;
  if (!/^\d+$/.test(text)) {
    const hint = spec.names ? ` (numbers ${spec.min}-${spec.max} or names ${spec.names[0]}-${spec.names.at(-1)})` : ` (numbers ${spec.min}-${spec.max})`;
    throw new CronSyntaxError(`cron ${spec.name} field "${field}": "${text}" is not a value${hint}`);
  }
  const n = Number(text);
  if (n < spec.min || n > spec.max) {
    throw new CronSyntaxError(`cron ${spec.name} field "${field}": ${n} is out of range ${spec.min}-${spec.max}`);
  }
  return n;
}

function parseField(field: string, spec: FieldSpec, allowQuestion: boolean): number[] {
  const values = new Set<number>();
  for (const item of field.split(",")) {
    if (item === "") throw new CronSyntaxError(`cron ${spec.name} field "${field}": empty list item`);
    const [range, stepText, extra] = item.split("/");
    if (extra !== undefined) throw new CronSyntaxError(`cron ${spec.name} field "${field}": more than one "/" in "${item}"`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) === 0) {
        throw new CronSyntaxError(`cron ${spec.name} field "${field}": step "${stepText}" must be a whole number >= 1`);
      }
      step = Number(stepText);
    }
    let lo: number;
    let hi: number;
    if (range === "*" || (allowQuestion && range === "?")) {
      lo = spec.min;
      hi = spec.name === "day-of-week" ? 6 : spec.max;
    } else if (range!.includes("-")) {
      const [a, b, more] = range!.split("-");
      if (more !== undefined || a === "" || b === "") throw new CronSyntaxError(`cron ${spec.name} field "${field}": "${range}" is not a range a-b`);
      lo = parseValue(a!, spec, field);
      hi = parseValue(b!, spec, field);
      if (lo > hi) throw new CronSyntaxError(`cron ${spec.name} field "${field}": range ${range} runs backwards (write it as two ranges)`);
    } else {
      lo = parseValue(range!, spec, field);
      // "a/n" means from a to the end, every n (as in Vixie cron and cronie).
      hi = stepText !== undefined ? (spec.name === "day-of-week" ? 6 : spec.max) : lo;
    }
    for (let v = lo; v <= hi; v += step) values.add(spec.name === "day-of-week" && v === 7 ? 0 : v);
  }
  return [...values].sort((a, b) => a - b);
}

/**
 * Parses a five-field cron expression or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`,
 * `@yearly`). Fields take `*`, values, names (JAN-DEC, SUN-SAT), ranges `a-b`, steps (`a-b/n`,
 * `a/n`, and `*` with `/n`) and comma lists; `?` means `*` in the day fields. Throws
 * {@link CronSyntaxError}.
 */
export function parseCron(expression: string): CronExpression {
  if (typeof expression !== "string") throw new CronSyntaxError(`a cron expression must be a string, not ${typeof expression}`);
  const trimmed = expression.trim();
  const expanded = trimmed.startsWith("@") ? MACROS[trimmed.toLowerCase()] : trimmed;
  if (expanded === undefined) {
    throw new CronSyntaxError(`cron macro "${trimmed}" is unknown (known: ${Object.keys(MACROS).join(", ")})`);
  }
  const parts = expanded.split(/\s+/).filter((p) => p !== "");
  if (parts.length !== 5) {
    throw new CronSyntaxError(
      `cron expression "${trimmed}" has ${parts.length} field${parts.length === 1 ? "" : "s"}; it needs 5: minute hour day-of-month month day-of-week` +
        (parts.length === 6 ? " (for seconds, use an interval: every)" : ""),
    );
  }
  const [minutes, hours, daysOfMonth, months, daysOfWeek] = parts.map((p, i) => parseField(p, FIELDS[i]!, i === 2 || i === 4));
  return {
    source: trimmed,
    minutes: minutes!,
    hours: hours!,
    daysOfMonth: daysOfMonth!,
    months: months!,
    daysOfWeek: daysOfWeek!,
    domStar: parts[2]!.startsWith("*") || parts[2] === "?",
    dowStar: parts[4]!.startsWith("*") || parts[4] === "?",
    followsRealTime: parts[0]!.startsWith("*") || parts[1]!.startsWith("*"),
  };
}

// ---- time zones -------------------------------------------------------------------------------

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** True when `timeZone` is an IANA zone this runtime knows ("UTC", "Europe/Paris"). */
export function isTimeZone(timeZone: string): boolean {
  if (typeof timeZone !== "string" || timeZone === "") return false;
  try {
    formatter(timeZone);
    return true;
  } catch (err) {
    if (err instanceof RangeError) return false;
    throw err;
  }
}

/** Wall-clock fields of instant `ms` in `timeZone`. */
export function wallClock(ms: number, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; second: number } {
  const out = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const part of formatter(timeZone).formatToParts(ms)) {
    if (part.type in out) out[part.type as keyof typeof out] = Number(part.value);
  }
  return out;
}

/** The zone's offset from UTC at instant `ms`, in milliseconds (Paris in winter: 3_600_000). */
export function zoneOffset(ms: number, timeZone: string): number {
  const floor = Math.floor(ms / 1000) * 1000;
  const w = wallClock(floor, timeZone);
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - floor;
}

/** The first instant whose offset is `after`, between `lo` (offset `before`) and `hi` (offset `after`). */
function transitionInstant(lo: number, hi: number, after: number, timeZone: string): number {
  while (hi - lo > 1000) {
    const mid = Math.floor((lo + hi) / 2000) * 1000;
    if (mid <= lo || mid >= hi) break;
    if (zoneOffset(mid, timeZone) === after) hi = mid;
    else lo = mid;
  }
  return hi;
}

// ---- evaluation -------------------------------------------------------------------------------

function dayMatches(cron: CronExpression, year: number, month: number, day: number): boolean {
  const dom = cron.daysOfMonth.includes(day);
  const dow = cron.daysOfWeek.includes(new Date(Date.UTC(year, month - 1, day)).getUTCDay());
  return cron.domStar || cron.dowStar ? dom && dow : dom || dow;
}

/** The instants a matching local date fires at, ascending. */
function instantsOfDay(cron: CronExpression, year: number, month: number, day: number, timeZone: string): number[] {
  const midnight = Date.UTC(year, month - 1, day);
  // A local day lies within [midnight - 14 h, midnight + 36 h] in every zone (offsets -12 h … +14 h).
  const before = zoneOffset(midnight - 14 * HOUR, timeZone);
  const after = zoneOffset(midnight + 36 * HOUR, timeZone);
  const out: number[] = [];
  if (before === after) {
    // No transition near this day (all but a few days a year): plain arithmetic.
    for (const h of cron.hours) for (const m of cron.minutes) out.push(midnight + h * HOUR + m * MINUTE - before);
    return out;
  }
  for (const h of cron.hours) {
    for (const m of cron.minutes) {
      const wall = midnight + h * HOUR + m * MINUTE;
      const valid = [...new Set([wall - before, wall - after])].filter((t) => zoneOffset(t, timeZone) === wall - t).sort((a, b) => a - b);
      if (valid.length === 0) {
        // Skipped by a forward change: wall-clock expressions fire once, right after the gap.
        if (!cron.followsRealTime) {
          const [lo, hi] = [wall - Math.max(before, after), wall - Math.min(before, after)];
          out.push(transitionInstant(lo, hi, Math.max(before, after), timeZone));
        }
      } else if (valid.length === 2 && !cron.followsRealTime) {
        // Repeated by a backward change: wall-clock expressions fire at the first occurrence only.
        out.push(valid[0]!);
      } else {
        out.push(...valid);
      }
    }
  }
  return [...new Set(out)].sort((a, b) => a - b);
}

/** Recently computed days per expression: consecutive ticks fall on the same day. */
const dayCache = new WeakMap<CronExpression, Map<string, number[]>>();
const DAY_CACHE_SIZE = 8;

function cachedInstantsOfDay(cron: CronExpression, year: number, month: number, day: number, timeZone: string): number[] {
  let days = dayCache.get(cron);
  if (!days) dayCache.set(cron, (days = new Map()));
  const key = `${timeZone}|${year}-${month}-${day}`;
  let instants = days.get(key);
  if (!instants) {
    instants = instantsOfDay(cron, year, month, day, timeZone);
    if (days.size >= DAY_CACHE_SIZE) days.delete(days.keys().next().value!);
    days.set(key, instants);
  }
  return instants;
}

/** Index of the first element of ascending `xs` greater than `x` (xs.length when none is). */
function firstAbove(xs: readonly number[], x: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** How far {@link nextCronTime} looks before deciding an expression never fires (Feb 29 on a Monday needs 28 years). */
const SEARCH_YEARS = 30;

/** The first instant strictly after `afterMs` at which `cron` fires in `timeZone`, or undefined if it never does. */
export function nextCronTime(cron: CronExpression, afterMs: number, timeZone = "UTC"): number | undefined {
  const start = wallClock(afterMs, timeZone);
  // Start a day early: in a repeated hour, later instants can carry earlier wall times.
  let date = new Date(Date.UTC(start.year, start.month - 1, start.day) - DAY);
  const endYear = start.year + SEARCH_YEARS;
  while (date.getUTCFullYear() <= endYear) {
    const year = date.getUTCFullYear();
    const month = date.getUTCMonth() + 1;
    const day = date.getUTCDate();
    if (!cron.months.includes(month)) {
      date = new Date(Date.UTC(year, month, 1));
      continue;
    }
    if (dayMatches(cron, year, month, day)) {
      const instants = cachedInstantsOfDay(cron, year, month, day, timeZone);
      const i = firstAbove(instants, afterMs);
      if (i < instants.length) return instants[i];
    }
    date = new Date(Date.UTC(year, month - 1, day + 1));
  }
  return undefined;
}

/** Instants in (`fromMs`, `toMs`] at which `cron` fires, ascending, at most `limit` of them. */
export function cronTimesBetween(cron: CronExpression, fromMs: number, toMs: number, timeZone = "UTC", limit = Infinity): number[] {
  const out: number[] = [];
  let t = fromMs;
  while (out.length < limit) {
    const next = nextCronTime(cron, t, timeZone);
    if (next === undefined || next > toMs) break;
    out.push(next);
    t = next;
  }
  return out;
}
