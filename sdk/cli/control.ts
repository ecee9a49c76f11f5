/** `celerity inspect <verb>` and `celerity control <verb>`: ask or tell workers, gather replies. */
import { CONTROL_VERBS, INSPECT_VERBS, type ControlOptions, type ControlVerb, type InspectVerb } from "../client/mod.ts";
import { CONNECTION_HELP, intOption, jsonArgs, onePositional, parseCommand, queueList, toJson } from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, UsageError, type Command, type Io } from "./io.ts";

const DESTINATION_HELP = `Destination (default: every worker):
  --worker <id,id>   workers by id (celerity inspect ping lists them)
  --host <h,h>       workers on these hosts
  --queue <q,q>      workers that consume any of these queues
  --timeout <ms>     how long to gather replies (default 1000; ends early when every --worker answered)
  --json             print the replies as JSON`;

const DESTINATION_OPTIONS = {
  worker: { type: "string" },
  host: { type: "string" },
  queue: { type: "string" },
  timeout: { type: "string" },
  json: { type: "boolean" },
} as const;

function controlOptions(values: { worker?: string; host?: string; queue?: string; timeout?: string }): ControlOptions {
  const split = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
  const destination = {
    ...(values.worker ? { workers: split(values.worker) } : {}),
    ...(values.host ? { hosts: split(values.host) } : {}),
    ...(values.queue ? { queues: queueList("--queue", values.queue) } : {}),
  };
  return {
    ...(Object.keys(destination).length ? { destination } : {}),
    ...(values.timeout ? { timeout: intOption("--timeout", values.timeout, 1) } : {}),
  };
}

export const inspectCommand: Command = {
  name: "inspect",
  summary: `ask workers: ${INSPECT_VERBS.join(", ")}`,
  usage: `Usage: celerity inspect <${INSPECT_VERBS.join("|")}> [destination options]

Asks every addressed worker and prints one block per worker that answered in time.

${DESTINATION_HELP}

${CONNECTION_HELP}

Examples:
  celerity inspect ping
  celerity inspect active --queue images --json

Exit codes:
  0  at least one worker answered
  1  no worker answered, or the server cannot be reached
  2  bad usage`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, DESTINATION_OPTIONS);
    const verb = onePositional(positionals, "inspect verb");
    if (!(INSPECT_VERBS as readonly string[]).includes(verb)) throw new UsageError(`unknown inspect verb ${JSON.stringify(verb)}: use ${INSPECT_VERBS.join(", ")}`);
    const options = controlOptions(values);
    const client = await openClient(values);
    try {
      const replies = await client.inspect(verb as InspectVerb, options);
      if (Object.keys(replies).length === 0) {
        io.err("error: no worker answered");
        return EXIT.failed;
      }
      if (values.json) io.out(toJson(replies));
      else for (const [worker, answer] of Object.entries(replies)) io.out(`${worker}: ${typeof answer === "string" ? answer : toJson(answer)}`);
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

export const controlCommand: Command = {
  name: "control",
  summary: `tell workers: ${CONTROL_VERBS.join(", ")}`,
  usage: `Usage: celerity control <${CONTROL_VERBS.join("|")}> [--args '<json>'] [destination options]

Tells every addressed worker and prints each reply (ok or the worker's error).
Arguments: pool_grow/pool_shrink {"n": 2}; rate_limit {"task": "images.resize", "rate": "10/s",
"global": false} (rate null removes it); add_consumer {"queue": "q", "options": {...}};
cancel_consumer, pause_queue, resume_queue {"queue": "q"}; shutdown {}.

  --args <json>      the verb's arguments (default {})
${DESTINATION_HELP}

${CONNECTION_HELP}

Examples:
  celerity control pool_grow --args '{"n": 2}' --host gpu-1
  celerity control pause_queue --args '{"queue": "images"}'

Exit codes:
  0  every worker that answered did it
  1  no worker answered, a worker refused, or the server cannot be reached
  2  bad usage`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, { ...DESTINATION_OPTIONS, args: { type: "string" } });
    const verb = onePositional(positionals, "control verb");
    if (!(CONTROL_VERBS as readonly string[]).includes(verb)) throw new UsageError(`unknown control verb ${JSON.stringify(verb)}: use ${CONTROL_VERBS.join(", ")}`);
    const args = values.args === undefined ? {} : jsonArgs(values.args);
    if (typeof args !== "object" || args === null || Array.isArray(args)) throw new UsageError("--args must be a JSON object");
    const options = controlOptions(values);
    const client = await openClient(values);
    try {
      const replies = await client.control(verb as ControlVerb, args as Record<string, unknown>, options);
      if (replies.length === 0) {
        io.err("error: no worker answered");
        return EXIT.failed;
      }
      if (values.json) io.out(toJson(replies));
      else for (const r of replies) io.out(`${r.worker}: ${r.ok ? (typeof r.result === "string" ? r.result : toJson(r.result)) : `error: ${r.error}`}`);
      return replies.every((r) => r.ok) ? EXIT.ok : EXIT.failed;
    } finally {
      await client.close();
    }
  },
};
