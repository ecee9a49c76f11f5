/** `celerity init`: create the namespace's streams and results bucket, and show them. */
import { streamConfigs } from "../client/mod.ts";
import { CONNECTION_HELP, noPositionals, parseCommand } from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, type Command, type Io } from "./io.ts";

export const initCommand: Command = {
  name: "init",
  summary: "create the streams and results bucket of a namespace (idempotent)",
  usage: `Usage: celerity init

Creates the namespace's streams (tasks, events, dead letters) and its results bucket if they are
missing, then prints each stream with its subjects and message count. Existing streams are left as
they are, so running it again changes nothing. Clients and workers also create them on first use.

${CONNECTION_HELP}

Example:
  celerity init --servers nats://nats.internal:4222 --namespace images

Exit codes:
  0  the topology exists; the streams are listed on stdout
  1  the server cannot be reached or refused (e.g. JetStream is not enabled)
  2  bad usage or bad settings`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {});
    noPositionals(positionals);
    const client = await openClient(values);
    const rows: [string, string, string][] = [["STREAM", "SUBJECTS", "MESSAGES"]];
    try {
      await client.ensureTopology();
      const jsm = await client.jsm();
      // Only the names are used: the streams themselves were just created by ensureTopology().
      const configs = streamConfigs(client.names, client.settings);
      for (const { name } of configs) {
        const info = await jsm.streams.info(name!);
        rows.push([info.config.name, info.config.subjects?.join(",") ?? "", String(info.state.messages)]);
      }
    } finally {
      await client.close();
    }
    io.out(`namespace ${client.names.namespace}: streams ready`);
    const widths = [0, 1].map((col) => Math.max(...rows.map((row) => row[col]!.length)));
    for (const [name, subjects, messages] of rows) io.out(`${name.padEnd(widths[0]!)}  ${subjects.padEnd(widths[1]!)}  ${messages}`);
    return EXIT.ok;
  },
};
