/**
 * Packet handlers against a real nats-server: each packet reaches exactly the handlers of its type,
 * each as its own task; unknown types are counted; a listener on the packets subject dispatches.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import {
  DispatchError,
  handler,
  HandlerRegistry,
  listen,
  packetsSubject,
  publishPacket,
  requestPacket,
  unknownPackets,
  type HandlerContext,
} from "../../sdk/worker/handlers.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

type Seen = { handler: string; type: string; payload: unknown; taskId: string; attempt: number };

/** GCN-like notices and LVAlert-like alerts, as in GWCelery. */
function registry(seen: Seen[]) {
  const handlers = new HandlerRegistry();
  const record = (name: string) => (payload: unknown, ctx: HandlerContext) => {
    // The task context's members reach the handler, the lazy ones (signal, log) included.
    assert.ok(ctx.signal instanceof AbortSignal && !ctx.signal.aborted && typeof ctx.log.info === "function");
    assert.ok(typeof ctx.retry === "function" && typeof ctx.progress === "function" && ctx.worker.id !== "");
    seen.push({ handler: name, type: ctx.packet.type, payload, taskId: ctx.id, attempt: ctx.attempt });
  };
  handlers.handler("gcn", ["FERMI_GBM_GND_POS", "FERMI_GBM_FIN_POS"], function handleFermi(payload, ctx) {
    record("handleFermi")(payload, ctx);
  });
  handlers.handler("gcn", "FERMI_GBM_FIN_POS", record("archive"), { name: "archive" });
  handlers.add(handler("gcn", ["SWIFT_BAT_GRB_POS"], record("swift"), {
    name: "swift",
    payload: v.object({ ra: v.number(), dec: v.number() }),
  }));
  handlers.handler("lvalert", ["cbc_gstlal", "cbc_pycbc"], record("handleCbc"), { name: "handleCbc" });
  return handlers;
}

describe("handlers", () => {
  test("handlers - declaring: task names per source, a dispatch table, clear errors", () => {
    const handlers = registry([]);
    assert.deepEqual(handlers.table(), {
      gcn: {
        FERMI_GBM_GND_POS: ["handlers.gcn.handleFermi"],
        FERMI_GBM_FIN_POS: ["handlers.gcn.handleFermi", "handlers.gcn.archive"],
        SWIFT_BAT_GRB_POS: ["handlers.gcn.swift"],
      },
      lvalert: { cbc_gstlal: ["handlers.lvalert.handleCbc"], cbc_pycbc: ["handlers.lvalert.handleCbc"] },
    });
    assert.deepEqual(handlers.registrations.map((r) => r.task), ["handlers.gcn.handleFermi", "handlers.gcn.archive", "handlers.gcn.swift", "handlers.lvalert.handleCbc"]);
    assert.throws(() => handlers.handler("gcn", "X", () => {}), /the function has no name; pass \{ name: "…" \}/);
    assert.throws(() => handlers.handler("gcn", "X", function archive() {}), /"handlers\.gcn\.archive" is registered twice/);
    assert.throws(() => handler("g c n", "X", function f() {}), /source "g c n" is not a valid subject token/);
    assert.throws(() => handler("gcn", [], function f() {}), /at least one packet type/);
    assert.equal(packetsSubject("celerity", "gcn"), "celerity.packets.gcn");
  });

  test("handlers - each packet reaches exactly the handlers of its type, each as its own task; unknown types are counted", async () => {
    const ns = freshNamespace("h");
    const seen: Seen[] = [];
    const handlers = registry(seen);
    await using w = worker(server, ns, { concurrency: 4 });
    handlers.register(w);
    assert.deepEqual(w.registered.sort(), ["handlers.gcn.archive", "handlers.gcn.handleFermi", "handlers.gcn.swift", "handlers.lvalert.handleCbc"]);
    await w.start();
    await using c = await client(server, ns);

    const reports = [];
    reports.push(await handlers.dispatch(c, "gcn", { type: "FERMI_GBM_GND_POS", payload: "<voe>gnd</voe>" }));
    reports.push(await handlers.dispatch(c, "gcn", { type: "FERMI_GBM_FIN_POS", payload: "<voe>fin</voe>" }));
    reports.push(await handlers.dispatch(c, "gcn", { type: "SWIFT_BAT_GRB_POS", payload: { ra: 10.5, dec: -3 } }));
    reports.push(await handlers.dispatch(c, "lvalert", { type: "cbc_pycbc", payload: { graceid: "G1" } }));
    // Unknown: a type nobody handles, twice, and a source nobody handles.
    reports.push(await handlers.dispatch(c, "gcn", { type: "ICECUBE_ASTROTRACK_GOLD", payload: 1 }));
    reports.push(await handlers.dispatch(c, "gcn", { type: "ICECUBE_ASTROTRACK_GOLD", payload: 2 }));
    reports.push(await handlers.dispatch(c, "kafka", { type: "igwn.gwalert", payload: 3 }));

    assert.deepEqual(reports.map((r) => r.tasks.map((t) => t.task)), [
      ["handlers.gcn.handleFermi"],
      ["handlers.gcn.handleFermi", "handlers.gcn.archive"],
      ["handlers.gcn.swift"],
      ["handlers.lvalert.handleCbc"],
      [], [], [],
    ]);
    assert.deepEqual(reports.map((r) => r.unknown), [false, false, false, false, true, true, true]);
    // Every task finishes (each handler's task is a task like any other, with its own result).
    for (const r of reports) for (const t of r.tasks) await c.task(t.id).result({ timeout: 10_000 });
    const got = seen.map((s) => `${s.handler}<-${s.type}`).sort();
    assert.deepEqual(got, [
      "archive<-FERMI_GBM_FIN_POS",
      "handleCbc<-cbc_pycbc",
      "handleFermi<-FERMI_GBM_FIN_POS",
      "handleFermi<-FERMI_GBM_GND_POS",
      "swift<-SWIFT_BAT_GRB_POS",
    ]);
    assert.deepEqual(seen.find((s) => s.handler === "swift")?.payload, { ra: 10.5, dec: -3 });
    assert.equal(new Set(seen.map((s) => s.taskId)).size, seen.length, "one task per handler and packet");

    const unknown = await unknownPackets(c);
    assert.deepEqual(unknown.map((u) => [u.source, u.type, u.count]), [["gcn", "ICECUBE_ASTROTRACK_GOLD", 2], ["kafka", "igwn.gwalert", 1]]);
    assert.deepEqual((await unknownPackets(c, "kafka")).map((u) => u.type), ["igwn.gwalert"]);
    assert.deepEqual(handlers.stats, { dispatched: 7, tasks: 5, unknown: 3, errors: 0 });
  });

  test("handlers - a payload a handler's schema rejects fails that handler only; a packet id makes redelivery run each handler once", async () => {
    const ns = freshNamespace("h");
    const seen: Seen[] = [];
    const handlers = registry(seen);
    handlers.handler("gcn", "SWIFT_BAT_GRB_POS", function logAll() {});
    await using c = await client(server, ns);
    await assert.rejects(handlers.dispatch(c, "gcn", { type: "SWIFT_BAT_GRB_POS", payload: { ra: "x" } }), (err: unknown) => {
      assert.ok(err instanceof DispatchError);
      assert.deepEqual(err.report.tasks.map((t) => t.task), ["handlers.gcn.logAll"]);
      assert.deepEqual(err.report.errors.map((e) => e.task), ["handlers.gcn.swift"]);
      assert.match(err.message, /handlers\.gcn\.swift: invalid arguments/);
      return true;
    });
    const first = await handlers.dispatch(c, "gcn", { type: "FERMI_GBM_FIN_POS", payload: "p", id: "ivo://nasa.gsfc.gcn/Fermi#1" });
    const again = await handlers.dispatch(c, "gcn", { type: "FERMI_GBM_FIN_POS", payload: "p", id: "ivo://nasa.gsfc.gcn/Fermi#1" });
    assert.deepEqual(again.tasks, first.tasks, "the same packet id gives the same task ids (stored once)");
    const jsm = await c.jsm();
    assert.equal((await jsm.streams.info(c.names.tasksStream)).state.messages, 1 + 2);
  });

  test("handlers - listen() dispatches packets published to <ns>.packets.<source>, once across listeners", async () => {
    const ns = freshNamespace("h");
    const seen: Seen[] = [];
    const handlers = registry(seen);
    await using w = worker(server, ns, { concurrency: 4 });
    handlers.register(w);
    await w.start();
    await using c = await client(server, ns);
    await using c2 = await client(server, ns);
    // Two listeners (two workers' eternal listeners): the queue group gives each packet to one.
    const l1 = listen(c, handlers, "gcn");
    const l2 = listen(c2, handlers, "gcn");
    await c.nc.flush();
    await c2.nc.flush();
    const report = await requestPacket(c, "gcn", { type: "FERMI_GBM_FIN_POS", payload: "fin" });
    assert.deepEqual(report.tasks.map((t) => t.task), ["handlers.gcn.handleFermi", "handlers.gcn.archive"]);
    for (let i = 0; i < 10; i++) publishPacket(c, "gcn", { type: "FERMI_GBM_GND_POS", payload: i });
    publishPacket(c, "gcn", { type: "AGILE_MCAL_ALERT", payload: "?" });
    await eventually(() => seen.length === 2 + 10, 15_000, "twelve handler runs");
    await eventually(async () => (await unknownPackets(c, "gcn"))[0]?.count === 1, 10_000, "the unknown packet counted");
    assert.equal(l1.stats.received + l2.stats.received, 12, "each packet taken by one listener");
    assert.deepEqual(seen.filter((s) => s.handler === "handleFermi" && s.type === "FERMI_GBM_GND_POS").map((s) => s.payload).sort(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await l1.stop();
    await l2.stop();
  });
});
