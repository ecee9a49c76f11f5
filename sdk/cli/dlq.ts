/** `celerity dlq list | show | replay | purge`: the dead-letter stream. */
import type { DeadLetter } from "../client/mod.ts";
import { CONNECTION_HELP, intOption, parseCommand, queueName, toJson } from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, UsageError, type Command, type Io } from "./io.ts";

const USAGE = `Usage: celerity dlq <list|show|replay|purge> [options]

  dlq list [--queue q] [--reason r] [--task name] [--limit n] [--json]
      dead letters oldest first: sequence, time, queue, reason, task, id, detail
  dlq show <seq> [--json]
      one dead letter with its headers and decoded task message
  dlq replay <seq>... | --all [--queue q] [--reason r]
      publish the original message again to its original subject, then remove the dead letter
  dlq purge [--queue q] --yes
      remove every dead letter (of one queue)

${CONNECTION_HELP}

Examples:
  celerity dlq list --reason invalid-args
  celerity dlq replay 17
  celerity dlq replay --all --queue images
  celerity dlq purge --queue images --yes

Exit codes:
  0  done
  1  the server cannot be reached, or a sequence does not exist
  2  bad usage`;

function row(d: DeadLetter): string {
  return [String(d.seq).padStart(6), new Date(d.at).toISOString(), d.queue, d.reason, d.task ?? "-", d.id ?? "-", d.detail].join("  ");
}

function shown(d: DeadLetter): unknown {
  const { data, ...rest } = d;
  return { ...rest, bytes: data.length };
}

export const dlqCommand: Command = {
  name: "dlq",
  summary: "list, show, replay or purge dead letters",
  usage: USAGE,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      queue: { type: "string" },
      reason: { type: "string" },
      task: { type: "string" },
      limit: { type: "string" },
      json: { type: "boolean" },
      all: { type: "boolean" },
      yes: { type: "boolean" },
    });
    const [verb, ...rest] = positionals;
    if (!verb) throw new UsageError("missing a dlq verb: list, show, replay or purge");
    const queue = values.queue === undefined ? undefined : queueName(values.queue);
    const seqs = rest.map((s) => intOption("sequence", s, 1));
    if (verb === "purge" && !values.yes) throw new UsageError("dlq purge removes dead letters for good: add --yes to confirm");
    if (verb === "show" && seqs.length !== 1) throw new UsageError("dlq show takes one sequence");
    if (verb === "replay" && seqs.length === 0 && !values.all) throw new UsageError("dlq replay takes sequences, or --all");
    if (!["list", "show", "replay", "purge"].includes(verb)) throw new UsageError(`unknown dlq verb ${JSON.stringify(verb)}: use list, show, replay or purge`);
    const client = await openClient(values);
    try {
      const dlq = client.deadLetters;
      if (verb === "list") {
        const filter = { ...(queue ? { queue } : {}), ...(values.reason ? { reason: values.reason } : {}), ...(values.task ? { task: values.task } : {}), limit: values.limit ? intOption("--limit", values.limit, 1) : 100 };
        const letters = await dlq.list(filter);
        if (values.json) io.out(toJson(letters.map(shown)));
        else if (letters.length === 0) io.out("no dead letters");
        else io.out(letters.map(row).join("\n"));
        return EXIT.ok;
      }
      if (verb === "show") {
        const letter = await dlq.get(seqs[0]!);
        if (!letter) {
          io.err(`error: no dead letter with sequence ${seqs[0]}`);
          return EXIT.failed;
        }
        io.out(toJson(shown(letter)));
        return EXIT.ok;
      }
      if (verb === "replay") {
        const targets = values.all
          ? (await dlq.list({ ...(queue ? { queue } : {}), ...(values.reason ? { reason: values.reason } : {}), limit: Number.MAX_SAFE_INTEGER })).map((d) => d.seq)
          : seqs;
        for (const seq of targets) {
          const d = await dlq.replay(seq);
          io.out(`replayed ${seq} → ${d.originalSubject || d.queue} (${d.task ?? "?"} ${d.id ?? ""})`.trimEnd());
        }
        if (targets.length === 0) io.out("nothing to replay");
        return EXIT.ok;
      }
      const purged = await dlq.purge(queue ? { queue } : {});
      io.out(`purged ${purged} dead letter${purged === 1 ? "" : "s"}${queue ? ` of queue ${queue}` : ""}`);
      return EXIT.ok;
    } catch (err) {
      if (/no dead letter with sequence/.test((err as Error).message)) {
        io.err(`error: ${(err as Error).message}`);
        return EXIT.failed;
      }
      throw err;
    } finally {
      await client.close();
    }
  },
};
