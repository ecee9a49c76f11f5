/**
 * The dependency rules of docs/architecture.md, checked on the source: folders import each other
 * only through their entry file (mod.ts), only in the allowed direction, without cycles, and only
 * the edges touch runtime APIs. A bundle check proves the client carries no worker code.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("../..", import.meta.url));
const sdk = join(root, "sdk");

/** Which sdk folders each folder may import (through their mod.ts). */
const ALLOWED: Record<string, string[]> = {
  protocol: [],
  signatures: ["protocol"],
  settings: [],
  transport: ["protocol", "settings"],
  canvas: ["protocol", "signatures"],
  beat: ["protocol", "signatures", "client"],
  client: ["protocol", "signatures", "settings", "transport", "canvas"],
  worker: ["protocol", "signatures", "settings", "transport", "client", "canvas"],
  callback: ["protocol", "signatures", "settings", "transport", "client"],
  notebook: ["protocol", "signatures", "client"],
  monitor: ["protocol", "client"],
  ingest: ["protocol", "signatures", "client"],
  testing: [],
  workflow: ["protocol", "signatures", "client", "canvas"],
  cli: ["protocol", "signatures", "settings", "transport", "client", "worker", "testing", "callback", "canvas", "beat", "monitor", "ingest"],
};
/** Folders allowed to use node:*, Deno.* or Bun.* (the runtime edges). */
const EDGES = new Set(["transport", "testing", "cli"]);

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

function imports(file: string): string[] {
  const src = readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of src.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']/g)) out.push(m[1]!);
  for (const m of src.matchAll(/import\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]!);
  return out;
}

const folderOf = (file: string) => relative(sdk, file).split("/")[0]!;
/** Sub-folders that are runtime edges too: the worker's thread and process pools need node:worker_threads and node:child_process. */
const EDGE_SUBFOLDERS = ["worker/pool/"];
const isEdge = (file: string) => EDGES.has(folderOf(file)) || EDGE_SUBFOLDERS.some((p) => relative(sdk, file).startsWith(p));

test("architecture - sdk folders import each other only through mod.ts and only in the allowed direction", () => {
  const problems: string[] = [];
  for (const file of files(sdk)) {
    const from = folderOf(file);
    assert.ok(from in ALLOWED, `sdk/${from} is not listed in the architecture test: add its allowed imports`);
    for (const spec of imports(file)) {
      if (spec.startsWith(".")) {
        const target = resolve(dirname(file), spec);
        const to = folderOf(target);
        if (to === from) continue;
        if (!target.endsWith(`${to}/mod.ts`)) problems.push(`${relative(root, file)} imports ${spec}: import sdk/${to}/mod.ts instead`);
        if (!ALLOWED[from]!.includes(to)) problems.push(`${relative(root, file)} imports sdk/${to}: ${from} may import only ${ALLOWED[from]!.join(", ") || "nothing"}`);
      } else if (/^node:/.test(spec) && !isEdge(file)) {
        problems.push(`${relative(root, file)} imports ${spec}: only ${[...EDGES].join(", ")} may use runtime APIs`);
      }
    }
    const src = readFileSync(file, "utf8");
    if (!isEdge(file) && /\b(Deno|Bun)\.\w+|\bprocess\.(env|on|exit|pid)\b/.test(src.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""))) {
      problems.push(`${relative(root, file)} touches a runtime global: move it to sdk/transport`);
    }
  }
  assert.deepEqual(problems, []);
});

test("architecture - every sdk folder has one entry file, mod.ts", () => {
  for (const name of readdirSync(sdk)) {
    if (!statSync(join(sdk, name)).isDirectory()) continue;
    assert.ok(statSync(join(sdk, name, "mod.ts")).isFile(), `sdk/${name}/mod.ts is missing`);
  }
});

test("architecture - the client bundle contains no worker code", async () => {
  const result = await build({
    entryPoints: [join(sdk, "client/mod.ts")],
    bundle: true,
    write: false,
    metafile: true,
    platform: "node",
    format: "esm",
    logLevel: "silent",
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((p) => p.includes("sdk/client/")), "sanity: the bundle has client files");
  assert.deepEqual(inputs.filter((p) => p.includes("sdk/worker/") || p.includes("sdk/cli/") || p.includes("sdk/testing/")), []);
});
