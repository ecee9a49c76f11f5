/** Runs the CLI from source: `node --import tsx sdk/cli/run.ts <command> …` (what bin/celerity.mjs does without dist/). */
import process from "node:process";
import { main } from "./mod.ts";

process.exitCode = await main(process.argv.slice(2));
