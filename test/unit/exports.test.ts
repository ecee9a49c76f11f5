/** package.json's exports and deno.json's exports name the same entry files (hono's habit). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const deno = JSON.parse(readFileSync("deno.json", "utf8"));

test("exports - every npm subpath has the same TypeScript entry in deno.json, and it exists", () => {
  const npm = Object.fromEntries(
    Object.entries(pkg.exports as Record<string, string | { types: string }>)
      .filter(([k]) => k !== "./package.json")
      .map(([k, v]) => [k, typeof v === "string" ? v : v.types]),
  );
  assert.deepEqual(deno.exports, npm);
  for (const file of Object.values(npm)) assert.ok(existsSync(file), `${file} exists`);
});

test("exports - every npm subpath's built file comes from an entry of scripts/build.mjs", () => {
  const build = readFileSync("scripts/build.mjs", "utf8");
  for (const [key, v] of Object.entries(pkg.exports as Record<string, string | { default: string }>)) {
    if (key === "./package.json") continue;
    const out = (v as { default: string }).default.replace("./dist/", "").replace(".js", "");
    assert.match(build, new RegExp(`\\b${out}: "sdk/`), `build.mjs builds dist/${out}.js for "${key}"`);
  }
  assert.equal(pkg.version, deno.version, "versions agree");
});
