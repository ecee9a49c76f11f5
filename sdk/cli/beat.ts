/** `celerity beat -s <schedule file>`: run one beat replica for the schedules a YAML or JSON file declares. */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { Beat, BEAT_LOG_LEVEL, checkSchedule, loadSchedules, nextTick, type BeatLogLevel } from "../beat/mod.ts";
import { onTerminationSignals } from "../transport/mod.ts";
import { CONNECTION_HELP, intOption, noPositionals, parseCommand } from "./args.ts";
import { connectInput, openClient, resolveSettings } from "./connection.ts";
import { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";

const LEVELS = Object.keys(BEAT_LOG_LEVEL) as BeatLogLevel[];

export const beatCommand: Command = {
  name: "beat",
  summary: "send periodic tasks from a schedule file; run as many replicas as you like (until SIGINT/SIGTERM)",
  usage: `Usage: celerity beat -s <schedule file> [--lease <seconds>] [--check] [--loglevel <level>]

Sends the periodic tasks a schedule file declares, by cron expression (in a time zone) or by
interval. Run it on several machines: the replicas elect a leader with a lease in the namespace's
beat bucket and each tick is sent exactly once (its task id, beat.<schedule>.<tick ms>, is the
dedupe key). A restarted beat sends what it missed according to each schedule's catchUp.

The file (YAML or JSON) holds a list, or an object with a "schedules" list:

  schedules:
    - name: cleanup
      task: maintenance.cleanup
      every: 300                  # seconds, aligned to the epoch
    - name: morning-report
      task: reports.daily
      cron: "0 7 * * MON-FRI"     # minute hour day-of-month month day-of-week
      timezone: Europe/Paris      # default: the timezone setting
      args: { format: pdf }
      options: { queue: reports, expires: 3600 }
      catchUp: once               # skip | once | all (default once)

Options:
  -s, --schedule <file>     the schedule file
  --lease <seconds>         how long a leader's lease lasts without renewal (default 10)
  --check                   check the file, print each schedule's next run, and exit
  -l, --loglevel <level>    ${LEVELS.join(", ")} (default: info); logs go to stderr

${CONNECTION_HELP}

Exit codes:
  0  stopped by SIGINT/SIGTERM (the lease is handed over), or --check found no problem
  1  the server cannot be reached
  2  bad usage, or a schedule file that cannot be read or has mistakes`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      schedule: { type: "string", short: "s" },
      lease: { type: "string" },
      check: { type: "boolean" },
      loglevel: { type: "string", short: "l" },
    });
    noPositionals(positionals);
    if (values.schedule === undefined || values.schedule === "") throw new UsageError("missing -s <schedule file>");
    const leaseSeconds = values.lease === undefined ? undefined : intOption("--lease", values.lease, 1);
    const logLevel = (values.loglevel ?? "info").toLowerCase() as BeatLogLevel;
    if (!LEVELS.includes(logLevel)) throw new UsageError(`--loglevel must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(values.loglevel)}`);
    let text: string;
    try {
      text = readFileSync(values.schedule, "utf8");
    } catch (err) {
      throw new CliError(`cannot read schedule file ${values.schedule}: ${(err as Error).message}`, EXIT.usage);
    }
    let data: unknown;
    try {
      data = parseYaml(text);
    } catch (err) {
      throw new CliError(`schedule file ${values.schedule} is not valid YAML or JSON: ${(err as Error).message}`, EXIT.usage);
    }
    // A BeatScheduleError is a ProtocolError: reported as a usage error (exit 2) by main().
    const schedules = loadSchedules(data);
    if (values.check) {
      const timezone = (await resolveSettings(connectInput(values))).timezone;
      const now = Date.now();
      for (const entry of schedules) {
        const s = checkSchedule(entry, timezone);
        const next = nextTick(s, now);
        io.out(`${s.name}: ${s.taskName} ${s.describe}, catchUp ${s.catchUp}; next ${next === undefined ? "never" : new Date(next).toISOString()}`);
      }
      return EXIT.ok;
    }
    const client = await openClient(values);
    try {
      const beat = new Beat(client, { schedules, ...(leaseSeconds !== undefined ? { leaseSeconds } : {}), logLevel });
      const off = onTerminationSignals(() => void beat.close());
      try {
        await beat.run();
      } finally {
        off();
        await beat.close();
      }
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
