// Real nats-server processes only: these tests prove the harness every other integration test
// stands on, so they check the processes, ports and files themselves, not just that calls return.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type StreamInfo } from "@nats-io/jetstream";
import {
  findNatsServer,
  freePort,
  NatsCluster,
  NatsServer,
  NatsServerNotFoundError,
} from "../../sdk/testing/mod.ts";

const MOD_URL = new URL("../../sdk/testing/mod.ts", import.meta.url).href;
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not reached within ${timeoutMs} ms${last ? `: ${(last as Error).message}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function withConnection<T>(servers: string | string[], fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await connect({ servers, timeout: 2000 });
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

/** Runs a tiny ESM script that imports the harness in a child Node process; resolves with its exit and stdout. */
function runChild(script: string, onLine?: (line: string, child: ReturnType<typeof spawn>) => void) {
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; lines: string[] }>((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines: string[] = [];
    let buffer = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("child did not exit within 15 s"));
    }, 15_000);
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        lines.push(line);
        onLine?.(line, child);
      }
    });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, lines });
    });
  });
}

test("testing - a single server starts with JetStream on a free port and stops", async () => {
  const server = await NatsServer.start();
  const { port, storeDir, pid } = server;
  assert.ok(port > 0 && port !== 4222, `port ${port}`);
  assert.equal(server.url, `nats://127.0.0.1:${port}`);
  assert.match(server.version, /^\d+\.\d+\.\d+/);
  assert.ok(pid !== undefined && alive(pid));
  assert.ok(existsSync(storeDir));
  assert.equal(await canBind(port), false, "the server should hold its port");

  const seq = await withConnection(server.url, async (nc) => {
    assert.equal(nc.info?.server_name, server.serverName);
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
    const ack = await jetstream(nc).publish("orders.new", "one");
    return ack.seq;
  });
  assert.equal(seq, 1);

  await server.stop();
  assert.equal(server.pid, undefined);
  assert.equal(alive(pid), false);
  assert.equal(existsSync(storeDir), false, "the generated store is removed");
  assert.equal(existsSync(server.configFile), false);
  assert.equal(await canBind(port), true, "the port is free after stop()");
  await server.stop(); // idempotent
});

test("testing - restart() keeps the port and the stream data", async () => {
  await using server = await NatsServer.start();
  await withConnection(server.url, async (nc) => {
    await jetstreamManager(nc).then((jsm) => jsm.streams.add({ name: "KEEP", subjects: ["keep"] }));
    assert.equal((await jetstream(nc).publish("keep", "x")).seq, 1);
  });
  const pidBefore = server.pid;
  const portBefore = server.port;

  await server.restart();

  assert.equal(server.port, portBefore);
  assert.notEqual(server.pid, pidBefore);
  assert.equal(alive(pidBefore!), false);
  const info = await withConnection(server.url, async (nc) => (await jetstreamManager(nc)).streams.info("KEEP"));
  assert.equal(info.state.messages, 1);
  assert.equal(info.state.last_seq, 1);
});

test("testing - kill(SIGKILL) ends the process, keeps the store, and stop() then cleans up", async () => {
  const server = await NatsServer.start();
  const pid = server.pid!;
  await server.kill("SIGKILL");
  assert.equal(alive(pid), false);
  assert.equal(server.pid, undefined);
  assert.equal(server.running, false);
  assert.ok(existsSync(server.storeDir), "kill keeps the store for restart()");
  await assert.rejects(() => withConnection(server.url, async () => undefined));

  await server.restart();
  assert.ok(server.running);
  await server.stop();
  assert.equal(existsSync(server.storeDir), false);
});

test("testing - await using stops the server and removes its store", async () => {
  let pid = 0;
  let storeDir = "";
  {
    await using server = await NatsServer.start();
    pid = server.pid!;
    storeDir = server.storeDir;
    assert.ok(alive(pid));
  }
  assert.equal(alive(pid), false);
  assert.equal(existsSync(storeDir), false);
});

test("testing - a given storeDir is kept by default and maxPayload reaches the server", async () => {
  const storeDir = await mkdtemp(join(tmpdir(), "celerity-test-store-"));
  try {
    const server = await NatsServer.start({ storeDir, maxPayload: 4096, jetstream: true });
    const maxPayload = await withConnection(server.url, async (nc) => {
      await (await jetstreamManager(nc)).streams.add({ name: "P", subjects: ["p"] });
      return nc.info?.max_payload;
    });
    assert.equal(maxPayload, 4096);
    await server.stop();
    assert.ok(existsSync(storeDir));
    assert.ok((await readdir(storeDir)).includes("jetstream"), "JetStream wrote into the given store");
    assert.equal(existsSync(server.configFile), false, "the generated config is still cleaned up");
  } finally {
    await rm(storeDir, { recursive: true, force: true });
  }
});

test("testing - a server with jetstream: false runs without JetStream", async () => {
  await using server = await NatsServer.start({ jetstream: false });
  await withConnection(server.url, async (nc) => {
    assert.equal(nc.info?.jetstream ?? false, false);
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    await assert.rejects(() => jsm.getAccountInfo());
  });
});

test("testing - a server that cannot start rejects with the tail of its log", async () => {
  await assert.rejects(
    () => NatsServer.start({ extraConfig: "this is { not valid" }),
    (err: Error) => {
      assert.match(err.message, /exited with code \d+ before it was ready/);
      assert.match(err.message, /Parse error/, "the log tail says what is wrong");
      return true;
    },
  );
  await assert.rejects(() => NatsServer.start({ binary: "/nonexistent/nats-server" }), /failed to run: .*ENOENT/);
});

test("testing - findNatsServer with NATS_SERVER=/nonexistent throws NatsServerNotFoundError with the install hint", () => {
  const saved = process.env.NATS_SERVER;
  process.env.NATS_SERVER = "/nonexistent";
  try {
    assert.throws(
      () => findNatsServer(),
      (err: unknown) => {
        assert.ok(err instanceof NatsServerNotFoundError);
        assert.ok(err instanceof Error);
        assert.equal(err.name, "NatsServerNotFoundError");
        assert.ok(
          err.message.startsWith(
            "nats-server was not found: run `sudo apt-get install -y nats-server` (Debian/Ubuntu) or set NATS_SERVER=/path/to/nats-server",
          ),
          err.message,
        );
        assert.match(err.message, /\/nonexistent/);
        return true;
      },
    );
  } finally {
    if (saved === undefined) delete process.env.NATS_SERVER;
    else process.env.NATS_SERVER = saved;
  }
  assert.ok(existsSync(findNatsServer()));
});

test("testing - freePort returns a loopback port that can be bound", async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
  assert.equal(await canBind(port), true);
});

test("testing - a server left running dies with the test process, which is not kept alive by it", async () => {
  const script = `
    import { NatsServer } from ${JSON.stringify(MOD_URL)};
    const s = await NatsServer.start();
    console.log(JSON.stringify({ pid: s.pid, store: s.storeDir }));
  `;
  const { code, lines } = await runChild(script);
  assert.equal(code, 0);
  const { pid, store } = JSON.parse(lines[0]!) as { pid: number; store: string };
  await eventually("leaked server gone", 3000, async () => (alive(pid) ? undefined : true));
  assert.equal(existsSync(store), false);
});

test("testing - SIGTERM to the test process takes its servers down too", async () => {
  const script = `
    import { NatsServer } from ${JSON.stringify(MOD_URL)};
    const s = await NatsServer.start();
    console.log(JSON.stringify({ pid: s.pid }));
    setInterval(() => {}, 1000);
  `;
  let pid = 0;
  const { signal } = await runChild(script, (line, child) => {
    pid = (JSON.parse(line) as { pid: number }).pid;
    child.kill("SIGTERM");
  });
  assert.equal(signal, "SIGTERM");
  assert.ok(pid > 0);
  await eventually("server gone", 3000, async () => (alive(pid) ? undefined : true));
});

function replicasCurrent(info: StreamInfo, size: number): boolean {
  const replicas = info.cluster?.replicas ?? [];
  return info.cluster?.leader !== undefined && replicas.length === size - 1 && replicas.every((r) => r.current && !r.offline);
}

test("testing - a 3-node cluster forms with a meta leader and takes an R3 stream", async () => {
  await using cluster = await NatsCluster.start();
  assert.equal(cluster.servers.length, 3);
  assert.equal(new Set(cluster.urls).size, 3);
  assert.ok(cluster.servers.every((s) => s.running));
  const leader = await cluster.waitForMetaLeader(1000);
  assert.ok(cluster.servers.some((s) => s.serverName === leader), `leader ${leader}`);

  await withConnection(cluster.urls, async (nc) => {
    const jsm = await jetstreamManager(nc);
    const created = await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
    assert.equal(created.config.num_replicas, 3);
    const ack = await jetstream(nc).publish("r3.a", "hello");
    assert.equal(ack.seq, 1);
    const info = await eventually("R3 replicas current", 5000, async () => {
      const i = await jsm.streams.info("R3");
      return replicasCurrent(i, 3) ? i : undefined;
    });
    const names = new Set([info.cluster!.leader!, ...info.cluster!.replicas!.map((r) => r.name)]);
    assert.deepEqual([...names].sort(), cluster.servers.map((s) => s.serverName).sort());
  });
});

test("testing - a killed cluster node restarts on the same ports and rejoins with the data", async () => {
  await using cluster = await NatsCluster.start();
  const leaderOf = await withConnection(cluster.urls, async (nc) => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "REJOIN", subjects: ["rejoin"], num_replicas: 3 });
    assert.equal((await jetstream(nc).publish("rejoin", "1")).seq, 1);
    return (await jsm.streams.info("REJOIN")).cluster!.leader!;
  });
  // Neither the stream leader nor the meta leader: a leader's death costs a ~5 s election on
  // 2.9.10, and this test is about rejoining, not failover.
  const metaLeader = await cluster.waitForMetaLeader(5000);
  const victim = cluster.servers.find((s) => s.serverName !== leaderOf && s.serverName !== metaLeader)!;
  const others = cluster.urls.filter((u) => u !== victim.url);
  const { port, storeDir } = victim;
  const pid = victim.pid!;

  await victim.kill("SIGKILL");
  assert.equal(alive(pid), false);
  await withConnection(others, async (nc) => {
    const ack = await eventually("publish with one node down", 10_000, () => jetstream(nc).publish("rejoin", "2"));
    assert.equal(ack.seq, 2);
  });

  await victim.restart();
  assert.equal(victim.port, port);
  assert.equal(victim.storeDir, storeDir);
  assert.ok(victim.running);

  assert.equal(await cluster.waitForMetaLeader(20_000), metaLeader, "the meta leader survived and sees the node again");

  await withConnection(victim.url, async (nc) => {
    assert.equal(nc.info?.server_name, victim.serverName);
    const jsm = await jetstreamManager(nc, { checkAPI: false });
    const info = await eventually("3 replicas current after rejoin", 20_000, async () => {
      const i = await jsm.streams.info("REJOIN");
      return replicasCurrent(i, 3) ? i : undefined;
    });
    assert.equal(info.state.messages, 2);
  });

  // The restarted node holds the message it missed while down, in its own store.
  const local = await eventually("restarted node has both messages", 20_000, async () => {
    const res = await fetch(`${victim.monitorUrl}/jsz?accounts=true&streams=true`);
    const jsz = (await res.json()) as {
      account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
    };
    const detail = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((d) => d.name === "REJOIN");
    return detail?.state.messages === 2 ? detail : undefined;
  });
  assert.equal(local.state.messages, 2);
});
