/** link / linkError: callbacks travel with the message and are sent by the worker that finishes the parent. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature } from "../../sdk/client/mod.ts";
import { link, linkError } from "../../sdk/canvas/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const double = signature("links.double", { args: v.number(), result: v.number() });
const boom = signature("links.boom", { args: v.object({}) });
const record = signature("links.record", { args: v.unknown() });

test("links - a link receives the parent's result; linkError receives the error; immutable keeps its args", async () => {
  const ns = freshNamespace();
  const seen: { args: unknown; parentId: unknown }[] = [];
  await using w = worker(server, ns)
    .implement(double, (n) => n * 2)
    .implement(boom, () => {
      throw new TypeError("broken input");
    })
    .implement(record, (args, ctx) => {
      seen.push({ args, parentId: ctx.meta.parentId });
    });
  await w.start();
  await using c = await client(server, ns);
  const ok = await c.send(double, 21, { callbacks: link({ task: "links.record" }, { task: "links.record", args: { fixed: true }, immutable: true }) });
  assert.equal(await ok.result({ timeout: 5000 }), 42);
  const bad = await c.send(boom, {}, { callbacks: linkError({ task: "links.record", args: { alert: "ops" } }) });
  await assert.rejects(bad.result({ timeout: 5000 }));
  await eventually(() => seen.length === 3, 5000, "three callbacks");
  assert.deepEqual(seen.find((s) => s.args === 42)?.parentId, ok.id);
  assert.ok(seen.some((s) => JSON.stringify(s.args) === JSON.stringify({ fixed: true })));
  const onError = seen.find((s) => (s.args as { alert?: string }).alert === "ops")!;
  assert.equal(onError.parentId, bad.id);
  assert.equal((onError.args as { parent: { error: { type: string } } }).parent.error.type, "TypeError");
});
