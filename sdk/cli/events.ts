/** `celerity events`: tail the task events of a namespace, filtered. */
import process from "node:process";
import { assertToken, type TaskEvent } from "../protocol/mod.ts";
import { monitor, parseEventType, type MonitorOptions, type Since } from "../monitor/mod.ts";
import { CONNECTION_HELP, noPositionals, parseCommand, queueName, taskId } from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, UsageError, type Command, type Io } from "./io.ts";

const USAGE = `Usage: celerity events [--follow] [--since 10m|ISO|all|new] [--type t,...] [--task glob] [--queue q] [--id id] [--json]

Prints task events, one line each: time, type, task, id, queue, worker and a detail (arguments,
result and runtime, error, retry, reason). Without --follow it prints the events the stream holds
(since --since, default all) and exits; with --follow it keeps printing new ones (since --since,
default now) until Ctrl-C.

Events of different processes arrive in any order: a worker's task-received can come before the
client's task-sent. Order by time, and by state: sent < received < started < retried < final.

Options:
  --follow            keep following until SIGINT/SIGTERM
  --since <when>      a duration back from now (30s, 10m, 2h, 1d), an ISO time, all, or new
  --type <t,...>      only these event types (task-failed or failed; comma-separated)
  --task <glob>       only tasks whose name matches (* any characters, ? one): 'images.*'
  --queue <q>         only events of this queue
  --id <id>           only events of this task id
  --durable <name>    read through a durable consumer: the next run starts where this one stopped
                      (--since then applies only when the consumer is created)
  --json              one JSON object per line (the event as sent)

${CONNECTION_HELP}

Examples:
  celerity events --since 1h --type failed,dead-lettered
  celerity events --follow --task 'images.*'
  celerity events --id 0b6f8c1e-3c1a-4d49-9d7e-7f0b6a1c2d3e --json

Exit codes:
  0  done (also when there were no events, and after Ctrl-C with --follow)
  1  the server cannot be reached
  2  bad usage`;

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: a duration back from `now` (`10m`), an ISO time, `all` or `new`. */
export function parseSince(value: string, now = Date.now()): Since {
  const v = value.trim();
  if (v === "all" || v === "new") return v;
  const d = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(v);
  if (d) return new Date(now - Number(d[1]) * UNIT_MS[d[2]!]!);
  // An ISO date or date-time; plain numbers are refused (seconds or ms would be a guess).
  if (/^\d{4}-\d{2}-\d{2}/.test(v)) {
    const t = Date.parse(v);
    if (!Number.isNaN(t)) return new Date(t);
  }
  throw new UsageError(`--since ${JSON.stringify(value)} is not a duration (30s, 10m, 2h, 1d), an ISO time, all or new`);
}

function clip(text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A user value of an event as JSON, or what the event says of it when it was left out (too large). */
function valueOf(e: TaskEvent, field: "args" | "result" | "progress"): string {
  const omitted = e.omitted?.[field];
  return omitted !== undefined ? `(${omitted} bytes, not carried by events)` : json(e[field]);
}

function json(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) ?? "undefined";
  } catch {
    return String(value);
  }
}

function errorText(e: TaskEvent): string {
  return e.error ? `${e.error.type}: ${e.error.message}` : "";
}

/** The detail column of one event. */
export function eventDetail(e: TaskEvent): string {
  switch (e.type) {
    case "task-sent": {
      const extra = [
        e.eta !== undefined ? `eta ${new Date(e.eta).toISOString()}` : "",
        e.expires !== undefined ? `expires ${new Date(e.expires).toISOString()}` : "",
        e.priority ? `priority ${e.priority}` : "",
      ].filter(Boolean);
      return clip([`args ${valueOf(e, "args")}`, ...extra].join(" "));
    }
    case "task-received":
      return e.retries ? `retry ${e.retries}` : "";
    case "task-progress":
      return clip(`progress ${valueOf(e, "progress")}`);
    case "task-retried":
      return clip(`retry ${e.retries ?? "?"}${e.eta !== undefined ? ` at ${new Date(e.eta).toISOString()}` : ""}${e.error ? `: ${errorText(e)}` : ""}`);
    case "task-succeeded":
      return clip(`${e.runtimeMs !== undefined ? `${e.runtimeMs} ms → ` : ""}${valueOf(e, "result")}`);
    case "task-failed":
      return clip(errorText(e));
    case "task-revoked":
      return clip(e.reason ?? "");
    case "task-dead-lettered":
      return clip(`${e.reason ?? "dead-lettered"}${e.error ? `: ${errorText(e)}` : ""}`);
    default:
      return "";
  }
}

/** One line of `celerity events`: time type task id queue worker detail. */
export function formatEvent(e: TaskEvent): string {
  const time = Number.isFinite(e.at) ? new Date(e.at).toISOString() : String(e.at);
  return [time, e.type.padEnd(18), e.task, e.id, e.queue ?? "-", e.worker ?? "-", eventDetail(e)].join("  ").trimEnd();
}

export const eventsCommand: Command = {
  name: "events",
  summary: "print task events (sent, received, started, succeeded, failed, …), or follow them",
  usage: USAGE,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      follow: { type: "boolean", short: "f" },
      since: { type: "string" },
      type: { type: "string" },
      task: { type: "string" },
      queue: { type: "string" },
      id: { type: "string" },
      durable: { type: "string" },
      json: { type: "boolean" },
    });
    noPositionals(positionals);
    const follow = values.follow === true;
    const options: MonitorOptions = { follow, since: values.since !== undefined ? parseSince(values.since) : follow ? "new" : "all" };
    if (values.type !== undefined) {
      try {
        options.types = values.type.split(",").filter((t) => t.trim() !== "").map(parseEventType);
      } catch (err) {
        throw new UsageError(`--type: ${(err as Error).message}`);
      }
      if (options.types.length === 0) throw new UsageError("--type needs at least one event type");
    }
    if (values.task !== undefined) options.task = values.task;
    if (values.queue !== undefined) options.queue = queueName(values.queue);
    if (values.id !== undefined) options.id = taskId(values.id);
    if (values.durable !== undefined) {
      assertToken("durable name", values.durable);
      options.durable = values.durable;
    }

    const client = await openClient(values);
    const stop = new AbortController();
    const onSignal = () => stop.abort();
    if (follow) {
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
    }
    options.signal = stop.signal;
    try {
      for await (const e of monitor(client, options)) io.out(values.json ? json(e) : formatEvent(e));
      return EXIT.ok;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      await client.close();
    }
  },
};
