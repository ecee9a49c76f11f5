/** Cron parsing and evaluation in time zones (incl. DST changes), interval ticks, and schedule files. */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  BeatScheduleError,
  checkSchedule,
  CronSyntaxError,
  cronTimesBetween,
  lastTickBefore,
  loadSchedules,
  nextCronTime,
  nextTick,
  parseCron,
  ticksBetween,
  tickId,
} from "../../sdk/beat/mod.ts";

const iso = (ms: number | undefined) => (ms === undefined ? "never" : new Date(ms).toISOString().replace(":00.000Z", "Z"));
const utc = (s: string) => Date.parse(s);
const times = (expr: string, from: string, to: string, tz = "UTC") => cronTimesBetween(parseCron(expr), utc(from), utc(to), tz).map(iso);

describe("cron - parsing", () => {
  test("cron - fields take values, ranges, steps, lists and names", () => {
    const c = parseCron("0,30 8-18/2 */10 JAN,jul-Sep mon-FRI");
    assert.deepEqual(c.minutes, [0, 30]);
    assert.deepEqual(c.hours, [8, 10, 12, 14, 16, 18]);
    assert.deepEqual(c.daysOfMonth, [1, 11, 21, 31]);
    assert.deepEqual(c.months, [1, 7, 8, 9]);
    assert.deepEqual(c.daysOfWeek, [1, 2, 3, 4, 5]);
    assert.equal(c.domStar, true);
    assert.equal(c.dowStar, false);
    assert.equal(c.followsRealTime, false);
  });

  test("cron - a/n runs to the end of the field, 7 is Sunday, ? means any day", () => {
    assert.deepEqual(parseCron("5/20 * * * *").minutes, [5, 25, 45]);
    assert.deepEqual(parseCron("0 0 * * 5-7").daysOfWeek, [0, 5, 6]);
    assert.deepEqual(parseCron("0 0 * * 7").daysOfWeek, [0]);
    assert.equal(parseCron("0 0 ? * 1").domStar, true);
    assert.equal(parseCron("*/5 * * * *").followsRealTime, true);
    assert.equal(parseCron("0 * * * *").followsRealTime, true);
  });

  test("cron - macros expand to their five fields", () => {
    assert.deepEqual(parseCron("@hourly").minutes, [0]);
    assert.equal(parseCron("@hourly").hours.length, 24);
    assert.deepEqual(parseCron("@weekly").daysOfWeek, [0]);
    assert.deepEqual(parseCron("@yearly").months, [1]);
    assert.deepEqual(parseCron("@daily").hours, [0]);
  });

  test("cron - mistakes are reported with the field and the value", () => {
    const cases: [string, RegExp][] = [
      ["* * * *", /has 4 fields; it needs 5/],
      ["0 * * * * *", /has 6 fields.*for seconds, use an interval: every/],
      ["60 * * * *", /minute field "60": 60 is out of range 0-59/],
      ["0 24 * * *", /hour field "24": 24 is out of range 0-23/],
      ["0 0 0 * *", /day-of-month field "0": 0 is out of range 1-31/],
      ["0 0 * FOO *", /month field "FOO": "FOO" is not a value \(numbers 1-12 or names JAN-DEC\)/],
      ["0 0 * * 5-1", /range 5-1 runs backwards/],
      ["*/0 * * * *", /step "0" must be a whole number >= 1/],
      ["1,,2 * * * *", /empty list item/],
      ["0 0 L * *", /"L" is not a value/],
      ["@reboot", /cron macro "@reboot" is unknown/],
    ];
    for (const [expr, message] of cases) {
      assert.throws(() => parseCron(expr), (err: unknown) => err instanceof CronSyntaxError && message.test(err.message), expr);
    }
  });
});

describe("cron - evaluation", () => {
  test("cron - next times in UTC", () => {
    assert.deepEqual(times("*/15 * * * *", "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"), [
      "2026-01-01T00:15Z", "2026-01-01T00:30Z", "2026-01-01T00:45Z", "2026-01-01T01:00Z",
    ]);
    // From Saturday 2026-01-03: the next weekday 09:00 is Monday the 5th.
    assert.equal(iso(nextCronTime(parseCron("0 9 * * MON-FRI"), utc("2026-01-03T12:00:00Z"))), "2026-01-05T09:00Z");
    // Strictly after: a time on a tick gives the following tick.
    assert.equal(iso(nextCronTime(parseCron("0 9 * * *"), utc("2026-01-05T09:00:00Z"))), "2026-01-06T09:00Z");
    assert.equal(iso(nextCronTime(parseCron("0 0 1 1 *"), utc("2026-06-01T00:00:00Z"))), "2027-01-01T00:00Z");
  });

  test("cron - when both day fields are restricted a day matching either fires (Friday the 13th is not required)", () => {
    const fired = times("0 0 13 * FRI", "2026-02-01T00:00:00Z", "2026-02-28T23:59:00Z").map((s) => s.slice(0, 10));
    assert.deepEqual(fired, ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27"]);
    // With a star day-of-month, day-of-week alone decides.
    assert.deepEqual(times("0 0 * 2 FRI", "2026-02-01T00:00:00Z", "2026-02-28T23:59:00Z").length, 4);
  });

  test("cron - an expression is evaluated in its time zone, across summer and winter time", () => {
    const c = parseCron("0 9 * * *");
    assert.equal(iso(nextCronTime(c, utc("2026-01-10T00:00:00Z"), "America/New_York")), "2026-01-10T14:00Z"); // EST, UTC-5
    assert.equal(iso(nextCronTime(c, utc("2026-07-10T00:00:00Z"), "America/New_York")), "2026-07-10T13:00Z"); // EDT, UTC-4
    assert.equal(iso(nextCronTime(c, utc("2026-07-10T00:00:00Z"), "Asia/Kolkata")), "2026-07-10T03:30Z"); // UTC+5:30
    assert.equal(iso(nextCronTime(c, utc("2026-01-10T00:00:00Z"), "Australia/Sydney")), "2026-01-10T22:00Z"); // AEDT, UTC+11
  });

  test("cron - DST spring forward: a skipped wall time fires once right after the gap; real-time expressions skip it", () => {
    // Europe/Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC; 02:30 does not exist.
    assert.deepEqual(times("30 2 * * *", "2026-03-27T12:00:00Z", "2026-03-30T12:00:00Z", "Europe/Paris"), [
      "2026-03-28T01:30Z", // 02:30 CET
      "2026-03-29T01:00Z", // the gap: 03:00 CEST, the first instant after it
      "2026-03-30T00:30Z", // 02:30 CEST
    ]);
    // Two wall times in the gap still fire once.
    assert.deepEqual(times("0,30 2 * * *", "2026-03-29T00:00:00Z", "2026-03-29T12:00:00Z", "Europe/Paris"), ["2026-03-29T01:00Z"]);
    // Every 30 minutes keeps a 30-minute rhythm in real time.
    assert.deepEqual(times("*/30 * * * *", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z", "Europe/Paris"), [
      "2026-03-29T00:30Z", "2026-03-29T01:00Z", "2026-03-29T01:30Z", "2026-03-29T02:00Z",
    ]);
    // An hourly job at minute 30 has no 02:30 that day and does not fire twice around the gap.
    assert.deepEqual(times("30 * * * *", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z", "Europe/Paris"), [
      "2026-03-29T00:30Z", "2026-03-29T01:30Z",
    ]);
    // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT at 07:00 UTC.
    assert.equal(iso(nextCronTime(parseCron("30 2 * * *"), utc("2026-03-08T00:00:00Z"), "America/New_York")), "2026-03-08T07:00Z");
  });

  test("cron - DST fall back: a repeated wall time fires once; real-time expressions fire in both hours", () => {
    // Europe/Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC; 02:00-02:59 happens twice.
    assert.deepEqual(times("30 2 * * *", "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z", "Europe/Paris"), [
      "2026-10-25T00:30Z", // 02:30 CEST, the first occurrence only
      "2026-10-26T01:30Z", // 02:30 CET
    ]);
    assert.deepEqual(times("0 * * * *", "2026-10-24T23:30:00Z", "2026-10-25T02:00:00Z", "Europe/Paris"), [
      "2026-10-25T00:00Z", // 02:00 CEST
      "2026-10-25T01:00Z", // 02:00 CET
      "2026-10-25T02:00Z", // 03:00 CET
    ]);
    const every20 = cronTimesBetween(parseCron("*/20 * * * *"), utc("2026-10-24T23:00:00Z"), utc("2026-10-25T03:00:00Z"), "Europe/Paris");
    assert.equal(every20.length, 12);
    assert.ok(every20.every((t, i) => i === 0 || t - every20[i - 1]! === 20 * 60_000), "a steady 20-minute rhythm through the change");
  });

  test("cron - a half-hour DST change (Lord Howe Island)", () => {
    // Australia/Lord_Howe, 2026-10-04: 02:00 (+10:30) becomes 02:30 (+11) at 15:30 UTC the day before.
    assert.equal(iso(nextCronTime(parseCron("15 2 * * *"), utc("2026-10-03T12:00:00Z"), "Australia/Lord_Howe")), "2026-10-03T15:30Z");
  });

  test("cron - evaluation is fast enough for long catch-ups", () => {
    const started = performance.now();
    const week = cronTimesBetween(parseCron("* * * * *"), utc("2026-03-01T00:00:00Z"), utc("2026-03-08T00:00:00Z"), "America/New_York");
    assert.equal(week.length, 7 * 24 * 60);
    // Generous: a regression to per-minute time-zone lookups would take tens of seconds.
    assert.ok(performance.now() - started < 10_000);
  });
});

describe("cron - schedules", () => {
  test("schedule - intervals tick on multiples of the interval since the epoch", () => {
    const s = checkSchedule({ name: "sweep", task: "maintenance.sweep", every: 60 });
    assert.equal(nextTick(s, utc("2026-01-01T00:00:30Z")), utc("2026-01-01T00:01:00Z"));
    assert.equal(nextTick(s, utc("2026-01-01T00:01:00Z")), utc("2026-01-01T00:02:00Z"));
    assert.deepEqual(ticksBetween(s, utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:03:00Z")).map(iso), [
      "2026-01-01T00:01Z", "2026-01-01T00:02Z", "2026-01-01T00:03Z",
    ]);
    assert.equal(iso(lastTickBefore(s, utc("2026-01-01T00:03:00Z"), 0)), "2026-01-01T00:02Z");
    assert.equal(lastTickBefore(s, utc("2026-01-01T00:03:00Z"), utc("2026-01-01T00:02:00Z")), undefined);
    assert.equal(tickId("sweep", utc("2026-01-01T00:01:00Z")), "beat.sweep.1767225660000");
  });

  test("schedule - the latest cron tick before a time, over long gaps", () => {
    const s = checkSchedule({ name: "yearly", task: "reports.yearly", cron: "0 0 1 1 *", timezone: "Europe/Paris" });
    assert.equal(iso(lastTickBefore(s, utc("2030-06-01T00:00:00Z"), utc("2020-01-01T00:00:00Z"))), "2029-12-31T23:00Z");
    const m = checkSchedule({ name: "minutely", task: "t.m", cron: "* * * * *" });
    assert.equal(iso(lastTickBefore(m, utc("2030-06-01T00:00:30Z"), 0)), "2030-06-01T00:00Z");
  });

  test("schedule - declarations are checked with clear messages", () => {
    const bad: [object, RegExp][] = [
      [{ name: "x", task: "t", cron: "* * * * *", every: 5 }, /set exactly one of "cron" or "every"/],
      [{ name: "x", task: "t" }, /set exactly one of "cron" or "every"/],
      [{ name: "x y", task: "t", every: 5 }, /the name must be/],
      [{ name: "x", task: "t t", every: 5 }, /task name "t t" is invalid/],
      [{ name: "x", task: "t", every: 0 }, /every must be a positive number of seconds/],
      [{ name: "x", task: "t", cron: "0 0 30 2 *" }, /never fires/],
      [{ name: "x", task: "t", cron: "0 0 * *" }, /beat schedule "x": cron expression "0 0 \* \*" has 4 fields/],
      [{ name: "x", task: "t", every: 5, timezone: "Mars/Olympus" }, /timezone "Mars\/Olympus" is not an IANA time zone/],
      [{ name: "x", task: "t", every: 5, options: { priority: 12 } }, /priority/],
      [{ name: "x", task: "t", every: 5, catchUp: "some" }, /catchUp must be "skip", "once" or "all"/],
    ];
    for (const [entry, message] of bad) {
      assert.throws(() => checkSchedule(entry as never), (err: unknown) => err instanceof BeatScheduleError && message.test(err.message), JSON.stringify(entry));
    }
  });

  test("schedule - loadSchedules reads plain data (a parsed YAML file) and reports every problem with its path", () => {
    const entries = loadSchedules({
      schedules: [
        { name: "cleanup", task: "maintenance.cleanup", every: 300, options: { queue: "maintenance", expires: 240 } },
        { name: "report", task: "reports.daily", cron: "0 7 * * MON-FRI", timezone: "Europe/Paris", catchUp: "all", args: { format: "pdf" } },
      ],
    });
    assert.equal(entries.length, 2);
    assert.deepEqual(entries[1], { name: "report", task: "reports.daily", cron: "0 7 * * MON-FRI", timezone: "Europe/Paris", catchUp: "all", args: { format: "pdf" } });
    assert.equal(checkSchedule(entries[1]!).describe, 'cron "0 7 * * MON-FRI" (Europe/Paris)');
    assert.equal(loadSchedules([{ name: "a", task: "t.a", every: 1 }]).length, 1, "a bare list works too");

    assert.throws(
      () => loadSchedules({ schedules: [{ name: "a", task: "t.a", cron: "61 * * * *" }, { name: "b", task: "t.b", every: 5, timezone: "Nowhere", extra: 1 }] }),
      (err: unknown) => {
        assert.ok(err instanceof BeatScheduleError);
        assert.match(err.message, /schedules\[0\]\.cron: cron minute field "61": 61 is out of range 0-59/);
        assert.match(err.message, /schedules\[1\]\.timezone: timezone "Nowhere" is not an IANA time zone/);
        assert.match(err.message, /schedules\[1\]\.extra/);
        return true;
      },
    );
    assert.throws(() => loadSchedules([{ name: "a", task: "t", every: 1 }, { name: "a", task: "t", every: 2 }]), /"a" is used twice/);
    assert.throws(() => loadSchedules([{ name: "a", task: "t", every: 1, cron: "* * * * *" }]), /set exactly one of "cron" or "every"/);
  });
});
