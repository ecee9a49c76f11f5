/** `celerity bundle-callback`: build the one-file HPC callback (respond.cjs), optionally with your signatures. */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { noPositionals, parseCommand } from "./args.ts";
import { CliError, EXIT, type Command, type Io } from "./io.ts";

/** The bundler lives in scripts/ (a build tool); find it from sdk/cli/ or from dist/. */
function bundlerPath(): string {
  for (const rel of ["../../scripts/bundle-callback.mjs", "../scripts/bundle-callback.mjs"]) {
    const p = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(p)) return p;
  }
  throw new CliError("scripts/bundle-callback.mjs was not found beside this installation of celerity", EXIT.failed);
}

export const bundleCallbackCommand: Command = {
  name: "bundle-callback",
  summary: "build respond.cjs, the one-file HPC callback that runs without node_modules",
  usage: `Usage: celerity bundle-callback [--signatures ./contracts.ts] [-o respond.cjs] [--no-minify]

Bundles the callback (protocol + transport + your signatures, nothing else) into one file that
runs with plain node and no node_modules: what an HPC job script calls at its end to report
success, failure or progress for a task id, or to send the next signature (docs/hpc-callback.md).
With --signatures, arguments of "send" are checked against your schemas before anything is sent.

Options:
  --signatures <module>  your signatures module (its exported signatures are bundled in)
  -o, --outfile <file>   where to write (default respond.cjs)
  --no-minify            keep it readable

Exit codes:
  0  written; its size and budget are printed
  1  the bundle failed to build or is over the 200 KB budget
  2  bad usage`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      signatures: { type: "string" },
      outfile: { type: "string", short: "o" },
      "no-minify": { type: "boolean" },
    });
    noPositionals(positionals);
    const bundler = (await import(bundlerPath())) as {
      bundleCallback(o: { signatures?: string; outfile?: string; minify?: boolean }): Promise<{ outfile: string; bytes: number }>;
      CALLBACK_BUDGET_BYTES: number;
    };
    const r = await bundler.bundleCallback({
      ...(values.signatures ? { signatures: values.signatures } : {}),
      outfile: values.outfile ?? "respond.cjs",
      minify: !values["no-minify"],
    });
    const kb = (r.bytes / 1024).toFixed(1);
    io.out(`${r.outfile}: ${kb} KB (budget ${bundler.CALLBACK_BUDGET_BYTES / 1024} KB)`);
    if (!values["no-minify"] && r.bytes > bundler.CALLBACK_BUDGET_BYTES) {
      io.err(`error: the bundle is over its budget`);
      return EXIT.failed;
    }
    return EXIT.ok;
  },
};
