/**
 * The client and the worker over NATS WebSocket connections, end to end. publishFrame()
 * (sdk/transport/frames.ts) hands nats.js pre-built frames, and nats.js's WebSocket transport sends
 * `frame.buffer` whole: a frame handed over as a view of the shared buffer would corrupt the stream.
 * test/integration/frames.test.ts checks that property at the transport; this runs real traffic
 * over a real WebSocket and checks every result.
 *
 * Node 20 has a global WebSocket only with --experimental-websocket, so the traffic runs in a child
 * process (test/fixtures/websocket_client.ts) started with that flag.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { freePort, NatsServer } from "../../sdk/testing/mod.ts";
import { finished, freshNamespace, root } from "./helpers.ts";

let server: NatsServer;
let wsUrl: string;
before(async () => {
  const wsPort = await freePort();
  server = await NatsServer.start({ extraConfig: `websocket { listen: "127.0.0.1:${wsPort}", no_tls: true }` });
  wsUrl = `ws://127.0.0.1:${wsPort}`;
});
after(async () => {
  await server?.stop();
});

function serverLogTail(): string {
  try {
    return readFileSync(server.logFile, "utf8").trim().split("\n").slice(-15).join("\n");
  } catch {
    return "(no log)";
  }
}

describe("websocket", () => {
  test("websocket - a worker and a client on WebSocket connections: 500 sends, 200 calls (some over 4 KB and 64 KB, unicode), progress and status, every result intact", async (t) => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("CELERITY_") && k !== "NATS_URL") env[k] = v;
    Object.assign(env, { CELERITY_WS_URL: wsUrl, CELERITY_NAMESPACE: freshNamespace("ws"), NO_COLOR: "1" });
    const child = spawn(process.execPath, ["--experimental-websocket", "--no-warnings", "--import", "tsx", "test/fixtures/websocket_client.ts"], {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const run = await finished(child, 25_000, "test/fixtures/websocket_client.ts");
    const report = `exit ${run.code ?? run.signal}\nstdout: ${run.stdout}\nstderr: ${run.stderr}\nnats-server log:\n${serverLogTail()}`;
    assert.equal(run.code, 0, report);
    const line = run.stdout.split("\n").find((l) => l.startsWith("ok "));
    assert.ok(line, report);
    t.diagnostic(line);
    const summary = JSON.parse(line.slice(3)) as Record<string, number>;
    assert.equal(summary.sends, 500);
    assert.equal(summary.calls, 200);
    assert.ok(summary.largeCalls! >= 20, `calls over 4 KB: ${summary.largeCalls}`);
    assert.ok(summary.progressReports! >= 1);
    assert.ok(summary.clientFrames! >= 700 && summary.workerFrames! >= 700, `publishes through publishFrame(): ${line}`);
  });
});
