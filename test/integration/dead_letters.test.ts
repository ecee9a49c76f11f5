/** Dead letters from the SDK and from `celerity dlq`: list, show, replay, purge. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature } from "../../sdk/client/mod.ts";
import { main } from "../../sdk/cli/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const picky = signature("dlq.picky", { args: v.object({ n: v.number() }), result: v.number() });

/** Runs the CLI in-process and captures its output. */
async function celerity(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

test("dlq - failures are listed with reasons, replayed after a fix, and purged", async () => {
  const ns = freshNamespace();
  let broken = true;
  const w = worker(server, ns).implement(picky, ({ n }) => {
    if (broken) throw new Error(`cannot handle ${n} yet`);
    return n * 10;
  });
  await w.start();
  await using c = await client(server, ns);
  const sent = await Promise.all([1, 2, 3].map((n) => c.send(picky, { n })));
  await c.send("dlq.unknown_task", { x: 1 });
  await eventually(async () => (await c.deadLetters.list()).length === 4, 10_000, "four dead letters");

  const failed = await c.deadLetters.list({ reason: "failed" });
  assert.equal(failed.length, 3);
  assert.deepEqual(new Set(failed.map((d) => d.id)), new Set(sent.map((h) => h.id)));
  assert.match(failed[0]!.detail, /^Error: cannot handle \d yet/);
  assert.equal(failed[0]!.queue, "default");
  assert.deepEqual(failed[0]!.message?.args, { n: Number(/\d/.exec(failed[0]!.detail)![0]) });
  const unknown = (await c.deadLetters.list({ reason: "unknown-task" }))[0]!;
  assert.equal(unknown.task, "dlq.unknown_task");

  // The CLI shows the same.
  const listed = await celerity(["dlq", "list", "--servers", server.url, "--namespace", ns]);
  assert.equal(listed.code, 0, listed.err);
  assert.equal(listed.out.trim().split("\n").length, 4);
  assert.match(listed.out, /failed {2}dlq\.picky/);
  const shown = await celerity(["dlq", "show", String(unknown.seq), "--json", "--servers", server.url, "--namespace", ns]);
  assert.equal(shown.code, 0, shown.err);
  assert.equal(JSON.parse(shown.out).reason, "unknown-task");
  assert.equal((await celerity(["dlq", "show", "99999", "--servers", server.url, "--namespace", ns])).code, 1);
  assert.equal((await celerity(["dlq", "purge", "--servers", server.url, "--namespace", ns])).code, 2, "purge needs --yes");

  // Fix the handler, replay the failures: they run again under their ids and succeed.
  broken = false;
  const replayed = await celerity(["dlq", "replay", "--all", "--reason", "failed", "--servers", server.url, "--namespace", ns]);
  assert.equal(replayed.code, 0, replayed.err);
  assert.equal(replayed.out.trim().split("\n").length, 3);
  for (const h of sent) {
    await eventually(async () => (await h.status()).state === "SUCCESS", 10_000, `replayed ${h.id}`);
  }
  assert.deepEqual((await c.deadLetters.list()).map((d) => d.reason), ["unknown-task"]);

  const purged = await celerity(["dlq", "purge", "--yes", "--servers", server.url, "--namespace", ns]);
  assert.match(purged.out, /purged 1 dead letter/);
  assert.equal((await c.deadLetters.list()).length, 0);
  await w.close();
});
