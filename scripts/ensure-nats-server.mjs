#!/usr/bin/env node
// Makes sure a nats-server binary exists for the integration tests (sdk/testing starts real servers).
// Plain JS on purpose: setup runs it before TypeScript tooling can be assumed. The lookup order
// mirrors sdk/testing/find_binary.ts; keep the two in step.
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import process from "node:process";

function isExecutableFile(path) {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && isExecutableFile(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

function findNatsServer() {
  // An explicit NATS_SERVER that is wrong must not be papered over by an install.
  if (process.env.NATS_SERVER) return isExecutableFile(process.env.NATS_SERVER) ? process.env.NATS_SERVER : undefined;
  return onPath("nats-server") ??
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"].find(isExecutableFile);
}

function reportFound(binary) {
  const result = spawnSync(binary, ["--version"], { encoding: "utf8" });
  const version = `${result.stdout ?? ""}${result.stderr ?? ""}`.trim() || "version unknown";
  console.log(`nats-server found: ${binary} (${version})`);
  process.exit(0);
}

function printHowToInstall(reason) {
  console.error(`nats-server was not found${reason ? ` (${reason})` : ""}. The integration tests start real servers; install one:
  - Debian/Ubuntu:  sudo apt-get install -y nats-server
  - elsewhere:      download a release from https://github.com/nats-io/nats-server/releases
                    and set NATS_SERVER=/path/to/nats-server`);
  process.exit(1);
}

const found = findNatsServer();
if (found) reportFound(found);
if (process.env.NATS_SERVER) printHowToInstall(`NATS_SERVER=${process.env.NATS_SERVER} is not an executable file`);

const isRoot = process.getuid?.() === 0;
const aptGet = onPath("apt-get");
if (!isRoot || !aptGet) {
  printHowToInstall(!aptGet ? "apt-get is not available here" : "not root, so not installing it automatically");
}

const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
console.log("nats-server not found; installing it with apt-get");
// A stale or unreachable mirror list should not stop the install from trying the cached one.
const update = spawnSync(aptGet, ["update"], { stdio: "inherit", env });
if (update.status !== 0) console.warn(`apt-get update failed (${update.status ?? update.signal}); trying the install anyway`);
const install = spawnSync(aptGet, ["install", "-y", "nats-server"], { stdio: "inherit", env });
if (install.status !== 0) printHowToInstall(`apt-get install -y nats-server failed (${install.status ?? install.signal})`);

const installed = findNatsServer();
if (installed) reportFound(installed);
printHowToInstall("apt-get reported success but no binary appeared");
