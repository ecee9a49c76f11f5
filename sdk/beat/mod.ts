/**
 * Celerity beat: periodic tasks by cron expression (in an IANA time zone) or by interval, sent by
 * any number of replicas of which exactly one fires each tick (a KV lease with compare-and-set,
 * and deterministic task ids as dedupe keys). Schedules are declared in code or loaded from plain
 * data (a YAML or JSON file) with {@link loadSchedules}.
 *
 * @example
 * ```ts
 * import { readFile } from "node:fs/promises";
 * import { parse } from "yaml";
 * import { connect } from "celerity";
 * import { Beat, loadSchedules } from "celerity/beat";
 *
 * const client = await connect();
 * const beat = new Beat(client, {
 *   schedules: [
 *     { name: "cleanup", task: "maintenance.cleanup", every: 300 },
 *     { name: "report", task: "reports.daily", cron: "0 7 * * MON-FRI", timezone: "Europe/Paris", catchUp: "once" },
 *     ...loadSchedules(parse(await readFile("beat.yaml", "utf8"))),
 *   ],
 * });
 * await beat.start(); // beat.close() releases the lease to the next replica
 * ```
 * @module
 */
export {
  Beat,
  beatBucket,
  LEASE_KEY,
  lastRunKey,
  serverSupportsSchedules,
  type BeatOptions,
  type BeatState,
  type FiredTick,
  type LastRun,
  type TickReport,
} from "./beat.ts";
export {
  BeatScheduleError,
  beatScheduleSchema,
  beatSchedulesSchema,
  CATCH_UP,
  checkSchedule,
  lastTickBefore,
  loadSchedules,
  nextTick,
  ticksBetween,
  tickId,
  type BeatScheduleData,
  type CatchUp,
  type Schedule,
  type ScheduleEntry,
  type ScheduleTaskOptions,
} from "./schedule.ts";
export { CronSyntaxError, cronTimesBetween, isTimeZone, nextCronTime, parseCron, wallClock, zoneOffset, type CronExpression } from "./cron.ts";
export { isCasConflict, KvLease, openBucket, type LeaseRecord, type LeaseView } from "./lease.ts";
export { BEAT_LOG_LEVEL, createBeatLogger, type BeatLogger, type BeatLogLevel } from "./log.ts";
