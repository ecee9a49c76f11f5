/** `celerity bundle-callback` writes a one-file callback that runs alone, within its size budget. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { main } from "../../sdk/cli/mod.ts";

test("cli - bundle-callback builds respond.cjs with the user's signatures, under 200 KB, runnable without node_modules", async () => {
  const dir = mkdtempSync(join(tmpdir(), "celerity-bcb-"));
  try {
    let out = "";
    let err = "";
    const signatures = fileURLToPath(new URL("../../examples/tasks/signatures.ts", import.meta.url));
    const code = await main(["bundle-callback", "--signatures", signatures, "-o", join(dir, "respond.cjs")], { out: (t) => (out += t), err: (t) => (err += t) });
    assert.equal(code, 0, err);
    assert.match(out, /respond\.cjs: \d+\.\d KB \(budget 200 KB\)/);
    assert.ok(statSync(join(dir, "respond.cjs")).size <= 200 * 1024);
    const help = spawnSync(process.execPath, ["respond.cjs", "--help"], { cwd: dir, encoding: "utf8" });
    assert.match(help.stdout + help.stderr, /node respond\.cjs success/);
    const bad = spawnSync(process.execPath, ["respond.cjs", "send", "images.thumbnail", "--args", '{"imageId":"a","width":1}'], { cwd: dir, encoding: "utf8", env: { ...process.env, CELERITY_SERVERS: "nats://127.0.0.1:1" } });
    assert.equal(bad.status, 2, "arguments checked against the bundled signature before connecting");
    assert.match(bad.stderr, /width/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
