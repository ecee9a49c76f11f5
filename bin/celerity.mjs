#!/usr/bin/env node
// The `celerity` command. Runs the built CLI (dist/cli.js); in a checkout that was not built yet,
// it loads the TypeScript source through tsx instead.
import { existsSync } from "node:fs";

const built = new URL("../dist/cli.js", import.meta.url);
let main;
if (existsSync(built)) {
  ({ main } = await import(built.href));
} else {
  let register;
  try {
    ({ register } = await import("tsx/esm/api"));
  } catch {
    console.error("error: dist/cli.js is missing and tsx is not installed: run `npm run build` (or `npm install` to get tsx)");
    process.exit(1);
  }
  register();
  // .ts files in a package that is not "type": "module" load as CommonJS: hook that side too.
  await import("tsx/cjs/api").then((api) => api.register(), () => {});
  ({ main } = await import(new URL("../sdk/cli/mod.ts", import.meta.url).href));
}
process.exitCode = await main(process.argv.slice(2));
