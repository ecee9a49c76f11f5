// Builds dist/: one ESM file per public entry (sdk/<folder>/mod.ts), shared code split into chunks.
// Dependencies stay external (they are installed beside us); the one-file HPC callback bundle
// that inlines everything is built separately by scripts/bundle-callback.mjs.
import { build } from "esbuild";
import { existsSync, rmSync } from "node:fs";

export const entries = {
  client: "sdk/client/mod.ts",
  protocol: "sdk/protocol/mod.ts",
  signatures: "sdk/signatures/mod.ts",
  worker: "sdk/worker/mod.ts",
  settings: "sdk/settings/mod.ts",
  testing: "sdk/testing/mod.ts",
  cli: "sdk/cli/mod.ts",
  beat: "sdk/beat/mod.ts",
  canvas: "sdk/canvas/mod.ts",
  notebook: "sdk/notebook/mod.ts",
  monitor: "sdk/monitor/mod.ts",
  workflow: "sdk/workflow/mod.ts",
  ingest: "sdk/ingest/mod.ts",
  callback: "sdk/callback/mod.ts",
  // Not a public entry: the process/thread pool's executor, which dist/worker.js looks for beside itself.
  pool_child: "sdk/worker/pool/child.ts",
};

// Chunk names change with the code: start from an empty dist/ so stale chunks never linger.
rmSync("dist", { recursive: true, force: true });
const entryPoints = Object.fromEntries(Object.entries(entries).filter(([, file]) => existsSync(file)));
await build({
  entryPoints,
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: true,
  logLevel: "warning",
});
