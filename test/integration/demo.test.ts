/**
 * The README's first command: the demo starts its own nats-server (no server configured), a worker
 * and a batch, prints the results and exits 0. Run from an empty directory, as on a fresh machine.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const demo = fileURLToPath(new URL("../../examples/demo.ts", import.meta.url));
const tsx = import.meta.resolve("tsx");

test("demo - npm start's demo runs end to end on an embedded nats-server and exits 0", () => {
  const cwd = mkdtempSync(join(tmpdir(), "celerity-demo-"));
  try {
    const env = { ...process.env };
    for (const k of ["CELERITY_SERVERS", "NATS_URL", "CELERITY_SETTINGS", "CELERITY_NAMESPACE"]) delete env[k];
    const r = spawnSync(process.execPath, ["--import", tsx, demo, "--count", "40"], { cwd, env, encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, `demo failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /started a local nats-server 2\.\d+\.\d+ at nats:\/\/127\.0\.0\.1:\d+ \(data in \.celerity\/nats\)/);
    assert.match(r.stderr, /call\(math\.add, \{a: 2, b: 40\}\) = 42/);
    assert.match(r.stderr, /\[#{30}\] 40\/40/);
    assert.match(r.stdout, /^40 thumbnails in \d+\.\d+ s; total bytes \d+$/m);
    assert.match(r.stdout, /refused as expected: invalid arguments for task "images\.thumbnail": width: Invalid value: Expected >=16 but received 8/);
    assert.ok(existsSync(join(cwd, ".celerity", "nats")), "data kept under ./.celerity/");
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
});
